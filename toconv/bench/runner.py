"""One benchmark run: every method at every output size, all metrics, cost and LLM savings."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from einops import rearrange, repeat
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
    is_seeded,
    load_checkpoint,
)
from toconv.bench.reducers import grid_side, rf_center_indices
from toconv.geometry import ConvGeometry, RFGeometry, resolve_geometry
from toconv.metrics import (
    PlugInProxy,
    PositionReader,
    PseudoLabels,
    TokenReader,
    cell_geometry,
    frechet_distance,
    information_kept,
    linear_information,
    sample_per_image,
    sliced_wasserstein,
    window_centres,
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


def _numbers(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def seed_summary(per_seed: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and sample std (0 for one seed) of every numeric leaf of per-seed results (same
    keys); other leaves are taken from the first seed. Returns (mean, std)."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key, first in per_seed[0].items():
        values = [r[key] for r in per_seed]
        if isinstance(first, dict):
            mean[key], std[key] = seed_summary(values)
        elif _numbers(values) and len(set(values)) == 1:
            mean[key], std[key] = first, 0.0
        elif _numbers(values):
            mean[key] = statistics.fmean(values)
            std[key] = statistics.stdev(values) if len(values) > 1 else 0.0
        else:
            mean[key] = first
    return mean, std


@dataclass
class Readers:
    """Everything fitted once per run on the real training tokens, frozen, then fed each method."""

    labels: PseudoLabels
    token: TokenReader
    position: PositionReader
    plug_in: PlugInProxy

    @classmethod
    def fit(cls, features: Features, sides: list[int], config: BenchConfig) -> Readers:
        settings, seed = config.probe, config.seed
        labels = PseudoLabels(features.train, settings, torch.Generator().manual_seed(seed))
        return cls(labels, TokenReader(features.train, labels, settings, seed),
                   PositionReader(features.train, labels, sides, settings, seed),
                   PlugInProxy(features.train, features.train_cls, settings, seed))

    def describe(self, features: Features) -> dict[str, Any]:
        """The readers' own figures: training curves and what they score on real tokens."""
        side = grid_side(features.val.shape[1])
        full = window_centres(ConvGeometry(side, side, 1, 1, 0))
        return {"clusters": self.labels.num_classes,
                "token_reader": {**self.token.curve,
                                 "accuracy_on_real_tokens": self.token.token_accuracy(features.val)},
                "position_reader": {**self.position.curve,
                                    "on_full_real_grid": self.position.score(features.val, full,
                                                                             features.val)},
                "plug_in_ceiling": self.plug_in.score(features.val, features.val_cls)}


@dataclass
class FrechetDesign:
    """The same sampling for the floor and every method, per val image: ``count`` tokens of each
    image, drawn without replacement, in every one of several draws. The reference and the floor
    are two disjoint sets of real tokens of the same images that leave out every position a
    method may pass through unchanged (the ToConv RF centres keep-center keeps), so no method
    shares a row with the reference (ToMe's unmerged tokens excepted); the floor's spread over
    the draws is the resampling noise."""

    references: list[Tensor]
    floors: list[Tensor]
    count: int
    scale: float
    seed: int

    @classmethod
    def build(cls, val: Tensor, num_tokens: int, excluded: Tensor, scale: float,
              config: BenchConfig) -> FrechetDesign:
        """``num_tokens``: a method's tokens per image; ``excluded``: positions never drawn as real."""
        gen = torch.Generator().manual_seed(config.seed + 1)
        count = min(config.probe.frechet_samples_per_image, num_tokens)
        n, total, c = val.shape
        if 2 * count > total - len(excluded):
            raise ValueError(f"expected {2 * count} real tokens per image outside the {len(excluded)} "
                             f"excluded positions, got {total - len(excluded)}")
        refs, floors = [], []
        for _ in range(config.probe.frechet_draws):
            keys = torch.rand(n, total, generator=gen)
            keys[:, excluded] = 2.0  # drawn last, never within the first 2·count
            order = keys.argsort(dim=1)[:, : 2 * count].to(val.device)
            rows = val.gather(1, repeat(order, "n k -> n k c", c=c)) / scale
            refs.append(rearrange(rows[:, :count], "n k c -> (n k) c"))
            floors.append(rearrange(rows[:, count:], "n k c -> (n k) c"))
        return cls(refs, floors, count, scale, config.seed + 2)

    def floor(self, projections: Tensor) -> dict[str, float]:
        """The real-vs-real floor: mean and spread over the draws."""
        fd = [frechet_distance(f, r) for f, r in zip(self.floors, self.references, strict=True)]
        swd = [sliced_wasserstein(f, r, projections) for f, r in zip(self.floors, self.references, strict=True)]
        return {"frechet": statistics.fmean(fd), "frechet_draw_std": statistics.stdev(fd) if len(fd) > 1 else 0.0,
                "sliced_wasserstein": statistics.fmean(swd)}

    def score(self, tokens: Tensor, projections: Tensor) -> dict[str, float]:
        """(n_val, T, C) tokens → Fréchet and sliced W2 to the reference, mean and spread over draws."""
        fd, swd = [], []
        for r, ref in enumerate(self.references):
            sample = sample_per_image(tokens / self.scale, self.count,
                                      torch.Generator().manual_seed(self.seed + r))
            fd.append(frechet_distance(sample, ref))
            swd.append(sliced_wasserstein(sample, ref, projections))
        spread = statistics.stdev(fd) if len(fd) > 1 else 0.0
        return {"frechet": statistics.fmean(fd), "frechet_draw_std": spread,
                "sliced_wasserstein": statistics.fmean(swd)}


def score_method(method: Method, features: Features, geometry: ConvGeometry, readers: Readers,
                 design: FrechetDesign, projections: Tensor, config: BenchConfig) -> dict[str, Any]:
    """Every figure of one method at one size and seed (all on the val split)."""
    train, val = features.train[: config.probe.probe_train_images], features.val
    out = geometry.output_grid_size
    val_z = _apply(method.compress, val)
    val_aligned = val_z if method.rf_tokens is None else _apply(method.rf_tokens, val)
    train_aligned = _apply(method.aligned, train)
    windows = method.geometry or cell_geometry(geometry.input_grid_size, out)
    timing_batch = val[: config.timing_images]
    return {
        "tokens": val_z.shape[1],
        "learned": method.learned,
        "information": information_kept(train_aligned, train, val_aligned, val),
        "information_linear": linear_information(train_aligned, train, val_aligned, val,
                                                 RFGeometry.from_conv(geometry)),
        "reader": readers.token.score(val_aligned, val),
        "position_reader": readers.position.score(val_aligned, window_centres(windows), val),
        **design.score(val_z, projections),
        "plug_in": readers.plug_in.score(val_z, features.val_cls),
        "params": method.params,
        "mflops_per_image": method.flops / 1e6,
        "cpu_ms_per_image": reducer_ms_per_image(method.compress, timing_batch, config.timing_repeats),
        "train_seconds": method.train_seconds,
        "train_last_losses": method.history,
        "source": method.source,
    }


def evaluate_size(features: Features, geometry: ConvGeometry, config: BenchConfig, readers: Readers,
                  log: Callable[[str], None],
                  checkpoints: dict[str, TokenCompressor] | None = None) -> dict[str, Any]:
    """Build and score every method at one geometry, seeded ones at every seed, plus the trained
    ``checkpoints`` (path → compressor) of that geometry as extra rows.

    A seeded method's entry holds the mean over seeds (same keys as a single result), ``std``
    (the same keys: sample std) and ``seeds`` (seed → its own result).
    """
    cell_geometry(geometry.input_grid_size, geometry.output_grid_size)  # the fair target's cells
    scale = float(features.train.std(dim=(0, 1)).mean())
    centres = rf_center_indices(RFGeometry.from_conv(geometry))
    design = FrechetDesign.build(features.val, geometry.num_outputs, centres, scale, config)
    gen = torch.Generator().manual_seed(config.seed)
    projections = torch.randn(config.probe.swd_projections, features.train.shape[-1], generator=gen)
    projections = projections / projections.norm(dim=-1, keepdim=True)
    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    for index, seed in enumerate(config.seeds):
        ctx = MethodContext(features.train, geometry, config, log, seed=seed)
        names = [n for n in config.methods if index == 0 or is_seeded(n)]
        methods = build_methods(ctx, names)
        if index == 0:
            methods += [checkpoint_method(path, c) for path, c in (checkpoints or {}).items()]
        for method in methods:
            if seed in per_seed.get(method.name, {}):
                raise ValueError(f"expected distinct method names at {geometry.name}, got {method.name!r} twice")
            started = time.perf_counter()
            result = score_method(method, features, geometry, readers, design, projections, config)
            per_seed.setdefault(method.name, {})[seed] = result
            log(f"  {geometry.name} {method.name} seed {seed}: info R2={result['information']['r2']:.3f} "
                f"linear={result['information_linear']['r2']:.3f} "
                f"reader={result['reader']['rf_accuracy']:.3f} "
                f"position={result['position_reader']['accuracy']:.3f} "
                f"FD={result['frechet']:.3f} ({time.perf_counter() - started:.0f} s)")
    results: dict[str, Any] = {}
    for name, runs in per_seed.items():
        if len(runs) == 1:
            results[name] = next(iter(runs.values()))
            continue
        mean, std = seed_summary(list(runs.values()))
        results[name] = {**mean, "std": std, "seeds": {str(s): r for s, r in runs.items()}}
    return {
        "tokens": geometry.num_outputs,
        "geometry": {"input_grid_size": geometry.input_grid_size,
                     "output_grid_size": geometry.output_grid_size, "kernel_size": geometry.kernel_size,
                     "stride": geometry.stride, "padding": geometry.padding},
        "frechet_samples_per_image": design.count,
        "frechet_samples": design.count * features.val.shape[0],
        "token_scale": scale,
        "reference": design.floor(projections),
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
    started_readers = time.perf_counter()
    readers = Readers.fit(features, sizes, config)
    log(f"readers fitted in {time.perf_counter() - started_readers:.0f} s")
    report: dict[str, Any] = {
        "config": config.to_dict(),
        "environment": environment(),
        "data": {**features.source, "train_images": features.train.shape[0],
                 "val_images": features.val.shape[0], "tokens": num_tokens, "dim": dim,
                 "input_grid_size": side},
        "checkpoints": list(trained),
        "readers": readers.describe(features),
        "sizes": {},
    }
    for out in sizes:
        geometry = resolve_geometry(side, out)
        here = {p: c for p, c in trained.items() if c.geometry == geometry}
        report["sizes"][str(out)] = evaluate_size(features, geometry, config, readers, log, here)
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
