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
    load_checkpoint,
)
from toconv.bench.reducers import grid_side, rf_center_indices
from toconv.geometry import ConvGeometry, RFGeometry, resolve_geometry
from toconv.metrics import (
    ProbeSettings,
    PseudoLabels,
    TokenReader,
    TrainedReader,
    cell_assignments,
    cell_pca_codes,
    frechet_distance,
    information_per_image,
)
from toconv.metrics.information import covering_tokens
from toconv.models import TokenCompressor

CONTROLS = ("control-rotated", "control-shuffled")


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


METRICS: tuple[tuple[str, bool], ...] = (
    ("information", True), ("information_ceiling", True), ("reader_linear", True),
    ("reader_linear_ce", False), ("reader_mlp", True), ("reader_mlp_ce", False),
    ("reader_trained", True), ("reader_trained_ce", False), ("frechet", False))
"""Every figure a method gets per run, and whether higher is better."""


def summary(runs: list[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "runs"}`` of one figure over the runs (sample std; None where a run has no
    value, e.g. Fréchet with too few tokens)."""
    if any(r is None for r in runs):
        return {"mean": None, "std": None, "runs": runs}
    return {"mean": statistics.fmean(runs), "std": statistics.stdev(runs) if len(runs) > 1 else 0.0,
            "runs": runs}


def paired_verdict(a: list[float | None], b: list[float | None], higher: bool) -> dict[str, Any]:
    """``a`` against ``b`` over the same runs: the mean and sample std of the paired differences and
    a verdict, ``better`` or ``worse`` only beyond 2 std of the difference, else ``within noise``
    (``n/a`` where a figure is missing)."""
    if any(v is None for v in (*a, *b)):
        return {"diff": None, "std": None, "verdict": "n/a"}
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    if abs(mean) <= 2 * std or mean == 0:
        word = "within noise"
    else:
        word = "better" if (mean > 0) == higher else "worse"
    return {"diff": mean, "std": std, "verdict": word}


@dataclass
class Instrument:
    """What is fitted on real training tokens at one instrument seed: k-means pseudo-labels, the
    frozen linear and MLP readers, and the labels of every original token of both splits."""

    seed: int
    labels: PseudoLabels
    linear: TokenReader
    mlp: TokenReader
    train_labels: Tensor
    val_labels: Tensor

    @classmethod
    def fit(cls, features: Features, settings: ProbeSettings, seed: int) -> Instrument:
        labels = PseudoLabels(features.train, settings, torch.Generator().manual_seed(seed))
        linear = TokenReader(features.train, labels, settings.reader_steps, settings.reader_lr,
                             settings.reader_batch_tokens, seed)
        mlp = TokenReader(features.train, labels, settings.mlp_steps, settings.mlp_lr,
                          settings.mlp_batch_tokens, seed, hidden=settings.mlp_width)
        return cls(seed, labels, linear, mlp, labels(features.train), labels(features.val))

    def describe(self, features: Features) -> dict[str, Any]:
        """The frozen readers' training curves and their accuracy on real val tokens' own labels."""
        return {"seed": self.seed, "clusters": self.labels.num_classes,
                "linear": {**self.linear.curve, "accuracy_on_real_tokens": self.linear.token_accuracy(features.val)},
                "mlp": {**self.mlp.curve, "accuracy_on_real_tokens": self.mlp.token_accuracy(features.val)}}


@dataclass
class FrechetSets:
    """Two disjoint sets of real val tokens per image, ``count`` each, drawn away from every
    position a method may pass through unchanged (the RF centres keep-center keeps): the reference
    every method is measured against and the floor (real against real). Scaled by ``scale``."""

    reference: Tensor
    floor: Tensor
    count: int
    scale: float

    @classmethod
    def draw(cls, val: Tensor, count: int, excluded: Tensor, scale: float, seed: int) -> FrechetSets:
        n, total, c = val.shape
        if 2 * count > total - len(excluded):
            raise ValueError(f"expected {2 * count} real tokens per image outside the {len(excluded)} "
                             f"excluded positions, got {total - len(excluded)}")
        keys = torch.rand(n, total, generator=torch.Generator().manual_seed(seed))
        keys[:, excluded] = 2.0  # drawn last, never within the first 2·count
        order = keys.argsort(dim=1)[:, : 2 * count].to(val.device)
        rows = val.gather(1, repeat(order, "n k -> n k c", c=c)) / scale
        return cls(rows[:, :count], rows[:, count:], count, scale)

    def enough(self, tokens_per_dim: int) -> bool:
        """Whether each set holds at least ``tokens_per_dim`` tokens per dimension."""
        n, count, dim = self.reference.shape
        return n * count >= tokens_per_dim * dim

    def distance(self, tokens: Tensor, images: Tensor) -> float:
        """Fréchet distance of (n, count, C) scaled tokens of the ``images`` drawn to the reference
        of the same images."""
        return frechet_distance(rearrange(tokens[images], "n k c -> (n k) c"),
                                rearrange(self.reference[images], "n k c -> (n k) c"))


def bootstrap_images(num_images: int, draws: int, seed: int) -> list[Tensor]:
    """``draws`` resamples of ``num_images`` val images with replacement (seeded by ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(num_images, (num_images,), generator=gen) for _ in range(draws)]


def _ratio(stats: dict[str, Tensor], num: str, den: str, images: Tensor) -> float:
    return float(stats[num][images].sum() / stats[den][images].sum())


def _information(stats: dict[str, Tensor], images: Tensor) -> float:
    return 1.0 - _ratio(stats, "sse", "sst", images)


def method_tokens(method: Method, x: Tensor) -> tuple[Tensor, Tensor]:
    """A split's (n, M, C) compressed tokens (``transform`` applied) and the (n, N) covering index
    (the grid cells where the method has no ``assignments``)."""
    z = _apply(method.compress, x)
    if method.transform is not None:
        z = method.transform(z)
    if method.assignments is None:
        a = cell_assignments(grid_side(x.shape[1]), grid_side(z.shape[1])).expand(x.shape[0], -1)
    else:
        a = _apply(method.assignments, x)
    return z, a


def score_run(method: Method, features: Features, geometry: ConvGeometry, inst: Instrument,
              fsets: FrechetSets, ceiling: dict[str, Tensor], draws: list[Tensor],
              config: BenchConfig) -> tuple[dict[str, list[float | None]], dict[str, float]]:
    """One method at one run (training and instrument seed): every figure at each bootstrap draw
    of the val images, and the trained reader's curve."""
    settings, out = config.probe, geometry.output_grid_size
    probe_n = settings.probe_train_images
    train_z, train_a = method_tokens(method, features.train)
    val_z, val_a = method_tokens(method, features.val)
    info = information_per_image(covering_tokens(train_z[:probe_n], train_a[:probe_n]),
                                 features.train[:probe_n], covering_tokens(val_z, val_a), features.val, out)
    linear = inst.linear.score(val_z, inst.val_labels, val_a)
    mlp = inst.mlp.score(val_z, inst.val_labels, val_a)
    reader = TrainedReader(train_z, inst.train_labels, inst.labels, settings, seed=inst.seed)
    trained = reader.score(val_z, inst.val_labels)
    if val_z.shape[1] > fsets.count:  # a subset of each image's tokens, as many as the reference
        keep = torch.rand(val_z.shape[:2], generator=torch.Generator().manual_seed(inst.seed)).argsort(1)
        val_z = val_z.gather(1, repeat(keep[:, : fsets.count], "n k -> n k c", c=val_z.shape[-1]))
    enough = fsets.enough(settings.frechet_tokens_per_dim)
    values: dict[str, list[float | None]] = {name: [] for name, _ in METRICS}
    for images in draws:
        information = _information(info, images)
        values["information"].append(information)
        values["information_ceiling"].append(information / _information(ceiling, images))
        for key, stats in (("reader_linear", linear), ("reader_mlp", mlp), ("reader_trained", trained)):
            values[key].append(_ratio(stats, "correct", "count", images))
            values[f"{key}_ce"].append(_ratio(stats, "cross_entropy", "count", images))
        values["frechet"].append(fsets.distance(val_z / fsets.scale, images) if enough else None)
    return values, reader.curve


def evaluate_size(features: Features, geometry: ConvGeometry, config: BenchConfig,
                  instruments: list[Instrument], log: Callable[[str], None],
                  checkpoints: dict[str, TokenCompressor] | None = None) -> dict[str, Any]:
    """Build and score every method at one geometry over the runs: run k trains seeded methods at
    seed ``config.seeds[k]``, reads them with ``instruments[k]`` and resamples the val images
    ``config.bootstrap_draws`` times; every method gets the same runs, so differences are paired.
    The trained ``checkpoints`` (path → compressor) of that geometry are extra rows."""
    settings, out = config.probe, geometry.output_grid_size
    n_val, total, _ = features.val.shape
    scale = float(features.train.std(dim=(0, 1)).mean())
    centres = rf_center_indices(RFGeometry.from_conv(geometry))
    count = min(geometry.num_outputs, (total - len(centres)) // 2)
    probe_n = settings.probe_train_images
    train_codes, val_codes = cell_pca_codes(features.train[:probe_n], features.val, out,
                                            torch.Generator().manual_seed(config.seed))
    grid = cell_assignments(geometry.input_grid_size, out)
    ceiling = information_per_image(covering_tokens(train_codes, grid), features.train[:probe_n],
                                    covering_tokens(val_codes, grid), features.val, out)
    runs: list[dict[str, int]] = []
    values: dict[str, dict[str, list[float | None]]] = {}
    rows: dict[str, dict[str, Any]] = {}
    floor: list[float] = []
    ceiling_runs: list[float] = []
    for k, (seed, inst) in enumerate(zip(config.seeds, instruments, strict=True)):
        draws = bootstrap_images(n_val, config.bootstrap_draws, 1000 * config.seed + k)
        runs += [{"training_seed": seed, "instrument_seed": inst.seed, "bootstrap": b} for b in range(len(draws))]
        fsets = FrechetSets.draw(features.val, count, centres, scale, inst.seed)
        floor += [fsets.distance(fsets.floor, images) for images in draws]
        ceiling_runs += [_information(ceiling, images) for images in draws]
        ctx = MethodContext(features.train, geometry, config, log, seed=seed)
        methods = build_methods(ctx, config.methods)
        methods += [checkpoint_method(path, c) for path, c in (checkpoints or {}).items()]
        for method in methods:
            started = time.perf_counter()
            run_values, curve = score_run(method, features, geometry, inst, fsets, ceiling, draws, config)
            for key, v in run_values.items():
                values.setdefault(method.name, {}).setdefault(key, []).extend(v)
            row = rows.setdefault(method.name, {
                "tokens": geometry.num_outputs, "learned": method.learned, "params": method.params,
                "mflops_per_image": method.flops / 1e6, "source": method.source,
                "cpu_ms_per_image": reducer_ms_per_image(method.compress, features.val[: config.timing_images],
                                                         config.timing_repeats),
                "train_seconds": [], "train_last_losses": [], "trained_reader_curves": []})
            row["train_seconds"].append(method.train_seconds)
            row["train_last_losses"].append(method.history)
            row["trained_reader_curves"].append(curve)
            log(f"  {geometry.name} {method.name} run {k}: "
                + " ".join(f"{key}={statistics.fmean(v):.3f}" for key, v in run_values.items()
                           if None not in v and not key.endswith("_ce"))
                + f" ({time.perf_counter() - started:.0f} s)")
    methods_out = {name: {**rows[name], **{key: summary(v) for key, v in values[name].items()}}
                   for name in rows}
    enough = fsets.enough(settings.frechet_tokens_per_dim)
    return {
        "tokens": geometry.num_outputs,
        "geometry": {"input_grid_size": geometry.input_grid_size, "output_grid_size": out,
                     "kernel_size": geometry.kernel_size, "stride": geometry.stride,
                     "padding": geometry.padding},
        "runs": runs,
        "frechet_tokens_per_set": n_val * count,
        "frechet_enough_tokens": enough,
        "token_scale": scale,
        "floor": summary(floor if enough else [None] * len(floor)),
        "ceiling_information": summary(ceiling_runs),
        "methods": methods_out,
        "verdicts": size_verdicts(values),
    }


def size_verdicts(values: dict[str, dict[str, list[float | None]]]) -> list[dict[str, Any]]:
    """Paired verdicts: every method against avg-pool, toconv-rf against toconv-init and against
    blend-pool (the token its start pins), and each control against toconv-rf, on every figure."""
    pairs = [(name, "avg-pool") for name in values if name != "avg-pool"]
    pairs += [("toconv-rf", "toconv-init"), ("toconv-rf", "blend-pool")] + [(c, "toconv-rf") for c in CONTROLS]
    out = []
    for a, b in pairs:
        if a in values and b in values:
            for key, higher in METRICS:
                out.append({"method": a, "against": b, "metric": key,
                            **paired_verdict(values[a][key], values[b][key], higher)})
    return out


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
    instruments = [Instrument.fit(features, config.probe, seed) for seed in config.seeds]
    log(f"instruments fitted at seeds {config.seeds} in {time.perf_counter() - started_readers:.0f} s")
    report: dict[str, Any] = {
        "config": config.to_dict(),
        "environment": environment(),
        "data": {**features.source, "train_images": features.train.shape[0],
                 "val_images": features.val.shape[0], "tokens": num_tokens, "dim": dim,
                 "input_grid_size": side},
        "checkpoints": list(trained),
        "instruments": [inst.describe(features) for inst in instruments],
        "sizes": {},
    }
    for out in sizes:
        geometry = resolve_geometry(side, out)
        here = {p: c for p, c in trained.items() if c.geometry == geometry}
        report["sizes"][str(out)] = evaluate_size(features, geometry, config, instruments, log, here)
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
