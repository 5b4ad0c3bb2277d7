"""Bench rows of the slots family: ``slots`` and ``slots-vq`` (semantic VQ), trained per seed.

Their tokens are not a grid: ``Method.assignments`` gives each original token's slot (the argmax
of the final attention), which the cell-based probes use as its cell.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from toconv.bench.methods import Method, MethodContext, frozen, n_params, register_method
from toconv.objective.slots import train_slots


def _slots(name: str) -> None:
    @register_method(name, seeded=True)
    def build(ctx: MethodContext) -> Method:
        started = time.perf_counter()
        compressor, history = train_slots(ctx.train, ctx.geometry.output_grid_size, name,
                                          ctx.method_seed, changes=ctx.config.recipe_changes)
        seconds = time.perf_counter() - started
        ctx.log(f"  trained {name} {ctx.geometry.name} seed {ctx.method_seed} in {seconds:.0f} s: "
                f"{history}")

        @torch.no_grad()
        def assignments(x: Tensor) -> Tensor:
            return compressor.assignments(x)

        return Method(name, frozen(compressor), n_params(compressor), compressor.flops(), learned=True,
                      train_seconds=seconds, history=history, source=f"recipe {name}",
                      assignments=assignments)


_slots("slots")
_slots("slots-vq")
