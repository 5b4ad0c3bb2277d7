"""One benchmark run: every method at every output size, all metrics, cost and LLM savings."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from toconv.bench.config import BenchConfig
from toconv.bench.cost import (
    clip_gpu_throughput,
    encoder_ms_per_image,
    llama_prefill_times,
    reducer_ms_per_image,
    vicuna7b_savings,
)
from toconv.bench.data import Features
from toconv.bench.methods import (
    Method,
    MethodContext,
    build_methods,
    checkpoint_method,
    load_checkpoint,
)
from toconv.bench.reducers import grid_side
from toconv.geometry import ConvGeometry, RFGeometry, resolve_geometry
from toconv.metrics import (
    PlugInProxy,
    frechet_distance,
    information_kept,
    linear_information,
    sample_rows,
    sliced_wasserstein,
)
from toconv.models import TokenCompressor


def environment() -> dict[str, Any]:
    """Versions and hardware the figures come from."""
    versions = {}
    for package in ("torch", "transformers", "numpy", "einops", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "versions": versions}


def _apply(fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 64) -> Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


def evaluate_size(features: Features, geometry: ConvGeometry, config: BenchConfig,
                  proxy: PlugInProxy, log: Callable[[str], None],
                  checkpoints: dict[str, TokenCompressor] | None = None) -> dict[str, Any]:
    """Train and score every method at one geometry (all figures on the val split), plus the
    trained ``checkpoints`` (path → compressor) of that geometry as extra rows."""
    train, val = features.train, features.val
    rf = RFGeometry.from_conv(geometry)
    methods: list[Method] = build_methods(MethodContext(train, geometry, config, log))
    methods += [checkpoint_method(path, c) for path, c in (checkpoints or {}).items()]
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"expected distinct method names at {geometry.name}, got {names}")
    scale = float(train.std(dim=(0, 1)).mean())
    samples = val.shape[0] * config.probe.frechet_samples_per_image
    gen = torch.Generator().manual_seed(config.seed)
    projections = torch.randn(config.probe.swd_projections, train.shape[-1], generator=gen)
    projections = projections / projections.norm(dim=-1, keepdim=True)
    originals = sample_rows(val / scale, 2 * samples, torch.Generator().manual_seed(config.seed + 1))
    reference, floor = originals[:samples], originals[samples:]
    timing_batch = val[: config.timing_images]
    results: dict[str, Any] = {}
    for method in methods:
        started = time.perf_counter()
        val_z = _apply(method.compress, val)
        val_aligned = val_z if method.rf_tokens is None else _apply(method.rf_tokens, val)
        train_aligned = _apply(method.aligned, train)
        info = information_kept(train_aligned, train, val_aligned, val, rf, config.probe, config.seed)
        linear = linear_information(train_aligned, train, val_aligned, val, rf)
        fake = sample_rows(val_z / scale, samples, torch.Generator().manual_seed(config.seed + 2))
        results[method.name] = {
            "tokens": val_z.shape[1],
            "learned": method.learned,
            "information": info,
            "information_linear": linear,
            "frechet": frechet_distance(fake, reference),
            "sliced_wasserstein": sliced_wasserstein(fake, reference, projections),
            "plug_in": proxy.score(val_z, features.val_cls),
            "params": method.params,
            "mflops_per_image": method.flops / 1e6,
            "cpu_ms_per_image": reducer_ms_per_image(method.compress, timing_batch, config.timing_repeats),
            "train_seconds": method.train_seconds,
            "train_last_losses": method.history,
            "source": method.source,
        }
        log(f"  {geometry.name} {method.name}: R2 linear={linear['r2']:.3f} "
            f"decoder={info['r2']:.3f} "
            f"FD={results[method.name]['frechet']:.3f} ({time.perf_counter() - started:.0f} s)")
    return {
        "tokens": geometry.num_outputs,
        "geometry": {"input_grid_size": geometry.input_grid_size,
                     "output_grid_size": geometry.output_grid_size, "kernel_size": geometry.kernel_size,
                     "stride": geometry.stride, "padding": geometry.padding},
        "frechet_samples": samples,
        "token_scale": scale,
        "reference": {"frechet": frechet_distance(floor, reference),
                      "sliced_wasserstein": sliced_wasserstein(floor, reference, projections)},
        "methods": results,
    }


def load_checkpoints(paths: Sequence[str | Path], features: Features) -> dict[str, TokenCompressor]:
    """Trained compressors for ``features``' tokens (path → compressor); ``ValueError`` on a mismatch."""
    num_tokens, dim = features.train.shape[1:]
    return {str(p): load_checkpoint(p, grid_side(num_tokens), dim) for p in paths}


def run_benchmark(features: Features, config: BenchConfig, encoder_name: str | None = None,
                  log: Callable[[str], None] = print,
                  checkpoints: dict[str, TokenCompressor] | None = None) -> dict[str, Any]:
    """Run the whole benchmark on ``features``; returns the report dictionary (all figures).

    ``checkpoints`` (:func:`load_checkpoints`): trained compressors scored as extra rows at their
    own output size, which joins ``config.output_grid_sizes`` when it is not there.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    features = features.limited(config.max_train_images, config.max_val_images)
    num_tokens, dim = features.train.shape[1:]
    side = grid_side(num_tokens)
    log(f"data: {features.train.shape[0]} train / {features.val.shape[0]} val images, "
        f"tokens {tuple(features.train.shape[1:])}")
    trained = checkpoints or {}
    sizes = list(config.output_grid_sizes)
    sizes += sorted({c.geometry.output_grid_size for c in trained.values()} - set(sizes), reverse=True)
    proxy = PlugInProxy(features.train, features.train_cls, config.probe, config.seed)
    report: dict[str, Any] = {
        "config": config.to_dict(),
        "environment": environment(),
        "data": {**features.source, "train_images": features.train.shape[0],
                 "val_images": features.val.shape[0], "tokens": num_tokens, "dim": dim,
                 "input_grid_size": side},
        "checkpoints": list(trained),
        "plug_in_ceiling": proxy.score(features.val, features.val_cls),
        "sizes": {},
    }
    for out in sizes:
        geometry = resolve_geometry(side, out)
        here = {p: c for p, c in trained.items() if c.geometry == geometry}
        report["sizes"][str(out)] = evaluate_size(features, geometry, config, proxy, log, here)
    if encoder_name and config.encoder_timing_images:
        report["encoder"] = encoder_ms_per_image(encoder_name, config.encoder_timing_images,
                                                 config.timing_repeats)
    else:
        report["encoder"] = {"skipped": "no encoder timed in this run"}
    llm_tokens = [num_tokens] + [out**2 for out in sizes]
    report["llm_prefill"] = llama_prefill_times(llm_tokens, config.llm_text_tokens, config.llm_repeats,
                                                config.seed)
    report["vicuna7b"] = vicuna7b_savings(llm_tokens, config.llm_text_tokens)
    report["gpu_throughput"] = clip_gpu_throughput(sizes, config.gpu_batch_size)
    report["total_seconds"] = time.perf_counter() - started
    return report
