"""The compared methods, one registry: fixed baselines, learned ones, and trained checkpoints.

Every method maps (B, N, C) patch tokens of a square grid to (B, M, C) tokens. A method is
registered with :func:`register_method` as a builder that receives the :class:`MethodContext` of
one output size and returns a :class:`Method` (or None where it does not apply).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from einops import repeat
from torch import Tensor, nn

from toconv.bench.config import BenchConfig
from toconv.bench.reducers import (
    average_pool,
    bilinear,
    rf_center_indices,
    tome_flops,
    tome_merge,
    train_unshuffle,
)
from toconv.geometry import ConvGeometry, RFGeometry
from toconv.models import TokenCompressor, init_compressor, load_compressor
from toconv.objective import train_on_tokens
from toconv.recipes import Recipe, get_recipe

Reducer = Callable[[Tensor], Tensor]


@dataclass
class Method:
    """One token reducer at one output size.

    Attributes:
        name: short id used in tables and JSON.
        compress: (B, N, C) → (B, M, C).
        rf_tokens: (B, N, C) → (B, M, C) tokens aligned with the RFs (token m describes RF m);
            ``compress`` itself for every method whose output is a grid.
        params: learned parameters.
        flops: analytic floating-point operations per image (multiply-add = 2).
        train_seconds: wall time of training (0 for fixed methods).
        source: where a learned method comes from (recipe name or checkpoint path).
    """

    name: str
    compress: Reducer
    params: int = 0
    flops: int = 0
    learned: bool = False
    rf_tokens: Reducer | None = None
    train_seconds: float = 0.0
    history: dict[str, float] | None = None
    source: str | None = None

    def aligned(self, x: Tensor) -> Tensor:
        return (self.rf_tokens or self.compress)(x)


@dataclass
class MethodContext:
    """What a method builder gets: the training tokens and the geometry of one output size."""

    train: Tensor
    geometry: ConvGeometry
    config: BenchConfig
    log: Callable[[str], None] = print
    _recipes: dict[str, Recipe] = field(default_factory=dict)

    @property
    def rf(self) -> RFGeometry:
        return RFGeometry.from_conv(self.geometry)

    @property
    def dim(self) -> int:
        return self.train.shape[-1]

    def recipe(self, name: str) -> Recipe:
        """Recipe ``name`` with the run's ``recipe_changes`` applied."""
        return get_recipe(name).changed(**self.config.recipe_changes)

    @cached_property
    def start(self) -> tuple[TokenCompressor, float]:
        """The untrained ToConv start of the ``bench`` recipe (shared by every ToConv row) and
        the seconds it took."""
        recipe = self.recipe("bench")
        started = time.perf_counter()
        compressor = init_compressor(self.train[: recipe.pca_images], self.geometry.output_grid_size,
                                     recipe.init, self.config.seed)
        return compressor.eval(), time.perf_counter() - started


_METHODS: dict[str, Callable[[MethodContext], Method | None]] = {}


def register_method(name: str) -> Callable[[Callable[[MethodContext], Method | None]],
                                           Callable[[MethodContext], Method | None]]:
    """Decorator: register a builder ``(MethodContext) -> Method | None`` under ``name``."""

    def wrap(builder: Callable[[MethodContext], Method | None]) -> Callable[[MethodContext], Method | None]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered")
        _METHODS[name] = builder
        return builder

    return wrap


def list_methods() -> list[str]:
    return list(_METHODS)


def build_method(name: str, ctx: MethodContext) -> Method | None:
    """Registered method ``name`` at ``ctx``'s size (None where it does not apply)."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(_METHODS)}")
    return _METHODS[name](ctx)


def build_methods(ctx: MethodContext) -> list[Method]:
    """Every registered method that applies at ``ctx``'s size, learned ones trained here."""
    return [m for m in (builder(ctx) for builder in _METHODS.values()) if m is not None]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def frozen(module: nn.Module) -> Reducer:
    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return module(x)

    return run


def compressor_flops(compressor: TokenCompressor) -> int:
    """Analytic FLOPs per image of a partial-conv compressor (multiply-add = 2)."""
    g, c = compressor.geometry, compressor.config
    return 2 * g.num_outputs * g.kernel_size**2 * c.hidden_dim * c.output_dim


def compressor_method(name: str, compressor: TokenCompressor, **kwargs: object) -> Method:
    return Method(name, frozen(compressor.eval()), n_params(compressor), compressor_flops(compressor),
                  learned=True, **kwargs)


# ----------------------------------------------------------------------------- fixed baselines
@register_method("avg-pool")
def _avg_pool(ctx: MethodContext) -> Method:
    out = ctx.geometry.output_grid_size
    return Method("avg-pool", lambda x: average_pool(x, out), flops=ctx.geometry.num_inputs * ctx.dim)


@register_method("bilinear")
def _bilinear(ctx: MethodContext) -> Method:
    out = ctx.geometry.output_grid_size
    return Method("bilinear", lambda x: bilinear(x, out), flops=8 * ctx.geometry.num_outputs * ctx.dim)


@register_method("tome")
def _tome(ctx: MethodContext) -> Method:
    m, center = ctx.geometry.num_outputs, rf_center_indices(ctx.rf)

    def aligned(x: Tensor) -> Tensor:
        merged, source = tome_merge(x, m)
        return merged.gather(1, repeat(source[:, center.to(x.device)], "b m -> b m c", c=x.shape[-1]))

    return Method("tome", lambda x: tome_merge(x, m)[0], flops=tome_flops(ctx.geometry.num_inputs, m, ctx.dim),
                  rf_tokens=aligned)


@register_method("keep-center")
def _keep_center(ctx: MethodContext) -> Method:
    center = rf_center_indices(ctx.rf)
    return Method("keep-center", lambda x: x[:, center.to(x.device)])


# ----------------------------------------------------------------------------- learned
@register_method("toconv-init")
def _toconv_init(ctx: MethodContext) -> Method:
    start, seconds = ctx.start
    ctx.log(f"  {ctx.recipe('bench').init} start {ctx.geometry.name} in {seconds:.0f} s")
    return compressor_method("toconv-init", start, train_seconds=seconds, source="recipe bench (untrained)")


def _toconv(name: str, recipe_name: str) -> None:
    @register_method(name)
    def build(ctx: MethodContext) -> Method:
        recipe = ctx.recipe(recipe_name)
        started = time.perf_counter()
        compressor, history = train_on_tokens(ctx.train, ctx.start[0], recipe, ctx.config.seed)
        seconds = time.perf_counter() - started
        ctx.log(f"  trained {name} {ctx.geometry.name} in {seconds:.0f} s: {history}")
        return compressor_method(name, compressor, train_seconds=seconds, history=history,
                                 source=f"recipe {recipe_name}")


_toconv("toconv-rf", "bench")
_toconv("toconv-global", "bench-global")
_toconv("toconv-recon", "bench-recon")


@register_method("unshuffle-linear")
def _unshuffle(ctx: MethodContext) -> Method | None:
    g = ctx.geometry
    if g.input_grid_size % g.output_grid_size:
        return None
    started = time.perf_counter()
    reducer, history = train_unshuffle(ctx.train, ctx.rf, ctx.recipe("bench"), ctx.config.unshuffle_lr,
                                       ctx.config.seed)
    seconds = time.perf_counter() - started
    ctx.log(f"  trained unshuffle-linear {g.name} in {seconds:.0f} s: {history}")
    f2 = (g.input_grid_size // g.output_grid_size) ** 2
    return Method("unshuffle-linear", frozen(reducer), n_params(reducer), 2 * g.num_outputs * f2 * ctx.dim**2,
                  learned=True, train_seconds=seconds, history=history, source="recipe bench")


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_name(path: Path) -> str:
    """Row name of a checkpoint: ``<run folder>/<file stem>``, e.g. ``quickstart/latest``."""
    path = Path(path)
    return f"{path.parent.name}/{path.stem}" if path.suffix == ".safetensors" else path.name


def load_checkpoint(path: str | Path, input_grid_size: int, hidden_dim: int) -> TokenCompressor:
    """A trained compressor for this benchmark's tokens; ``ValueError`` naming both when its
    input grid or width differs from the data's."""
    compressor = load_compressor(path)
    config = compressor.config
    if (config.input_grid_size, config.hidden_dim) != (input_grid_size, hidden_dim):
        raise ValueError(f"checkpoint {path} reads a {config.input_grid_size}x{config.input_grid_size} "
                         f"grid of width {config.hidden_dim}, but the benchmark's tokens are a "
                         f"{input_grid_size}x{input_grid_size} grid of width {hidden_dim}")
    if config.cls_token or config.output_dim != hidden_dim:
        raise ValueError(f"checkpoint {path}: expected patch tokens in and tokens of width {hidden_dim} "
                         f"out, got cls_token={config.cls_token}, out_dim={config.output_dim}")
    return compressor.eval()


def checkpoint_method(path: str | Path, compressor: TokenCompressor) -> Method:
    return compressor_method(checkpoint_name(Path(path)), compressor, source=str(path))
