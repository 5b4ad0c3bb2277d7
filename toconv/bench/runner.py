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
from toconv.bench.workers import Workers, resolve_workers
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


def fit_instrument(features: Features, settings: ProbeSettings, seed: int,
                   log: Callable[[str], None] = print) -> Instrument:
    """:meth:`Instrument.fit`, logged."""
    started = time.perf_counter()
    inst = Instrument.fit(features, settings, seed)
    log(f"  instrument at seed {seed} fitted in {time.perf_counter() - started:.0f} s")
    return inst


def size_ceiling(features: Features, geometry: ConvGeometry, config: BenchConfig,
                 log: Callable[[str], None] = print) -> dict[str, Tensor]:
    """Per val image, the information probe's sums on the best linear code of each cell (the cell
    tokens' top-C PCA, fitted on train): what ``information_ceiling`` divides by."""
    started = time.perf_counter()
    probe_n, out = config.probe.probe_train_images, geometry.output_grid_size
    train_codes, val_codes = cell_pca_codes(features.train[:probe_n], features.val, out,
                                            torch.Generator().manual_seed(config.seed))
    grid = cell_assignments(geometry.input_grid_size, out)
    stats = information_per_image(covering_tokens(train_codes, grid), features.train[:probe_n],
                                  covering_tokens(val_codes, grid), features.val, out)
    log(f"  information ceiling at {geometry.name} in {time.perf_counter() - started:.0f} s")
    return stats


def evaluate_run(features: Features, geometry: ConvGeometry, config: BenchConfig, k: int,
                 inst: Instrument, ceiling: dict[str, Tensor],
                 checkpoints: dict[str, TokenCompressor] | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run k at one geometry: the seeded methods built at seed ``config.seeds[k]`` (the trained
    ``checkpoints`` as extra rows), read with ``inst``, every figure at each of the run's
    ``config.bootstrap_draws`` resamples of the val images. Returns the run's ``runs`` keys,
    ``floor`` and ``ceiling`` figures, ``values`` (method → figure → one value per draw) and
    ``rows`` (method → what the report's row says besides the figures)."""
    seed, n_val, total = config.seeds[k], features.val.shape[0], features.val.shape[1]
    scale = float(features.train.std(dim=(0, 1)).mean())
    centres = rf_center_indices(RFGeometry.from_conv(geometry))
    count = min(geometry.num_outputs, (total - len(centres)) // 2)
    draws = bootstrap_images(n_val, config.bootstrap_draws, 1000 * config.seed + k)
    fsets = FrechetSets.draw(features.val, count, centres, scale, inst.seed)
    ctx = MethodContext(features.train, geometry, config, log, seed=seed)
    methods = build_methods(ctx, config.methods)
    methods += [checkpoint_method(path, c) for path, c in (checkpoints or {}).items()]
    values: dict[str, dict[str, list[float | None]]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for method in methods:
        started = time.perf_counter()
        values[method.name], curve = score_run(method, features, geometry, inst, fsets, ceiling, draws, config)
        rows[method.name] = {
            "tokens": geometry.num_outputs, "learned": method.learned, "params": method.params,
            "mflops_per_image": method.flops / 1e6, "source": method.source,
            "cpu_ms_per_image": reducer_ms_per_image(method.compress, features.val[: config.timing_images],
                                                     config.timing_repeats) if k == 0 else None,
            "train_seconds": method.train_seconds, "train_last_losses": method.history,
            "trained_reader_curve": curve}
        log(f"  {geometry.name} {method.name} run {k}: "
            + " ".join(f"{key}={statistics.fmean(v):.3f}" for key, v in values[method.name].items()
                       if None not in v and not key.endswith("_ce"))
            + f" ({time.perf_counter() - started:.0f} s)")
    return {"runs": [{"training_seed": seed, "instrument_seed": inst.seed, "bootstrap": b}
                     for b in range(len(draws))],
            "floor": [fsets.distance(fsets.floor, images) for images in draws],
            "ceiling": [_information(ceiling, images) for images in draws],
            "frechet_tokens_per_set": n_val * count, "scale": scale,
            "frechet_enough_tokens": fsets.enough(config.probe.frechet_tokens_per_dim),
            "values": values, "rows": rows}


def merge_runs(geometry: ConvGeometry, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One size's report block from its :func:`evaluate_run` results, in run order: every method's
    figures over all runs (paired across methods), its row from run 0 with the per-run training
    records, and the paired verdicts."""
    values = {name: {key: [v for part in parts for v in part["values"][name][key]] for key, _ in METRICS}
              for name in parts[0]["values"]}
    methods = {}
    for name in values:
        first = parts[0]["rows"][name]
        row = {key: first[key] for key in ("tokens", "learned", "params", "mflops_per_image", "source",
                                           "cpu_ms_per_image")}
        row["train_seconds"] = [part["rows"][name]["train_seconds"] for part in parts]
        row["train_last_losses"] = [part["rows"][name]["train_last_losses"] for part in parts]
        row["trained_reader_curves"] = [part["rows"][name]["trained_reader_curve"] for part in parts]
        methods[name] = {**row, **{key: summary(v) for key, v in values[name].items()}}
    enough = parts[0]["frechet_enough_tokens"]
    floor = [v for part in parts for v in part["floor"]]
    return {
        "tokens": geometry.num_outputs,
        "geometry": {"input_grid_size": geometry.input_grid_size, "output_grid_size": geometry.output_grid_size,
                     "kernel_size": geometry.kernel_size, "stride": geometry.stride,
                     "padding": geometry.padding},
        "runs": [r for part in parts for r in part["runs"]],
        "frechet_tokens_per_set": parts[0]["frechet_tokens_per_set"],
        "frechet_enough_tokens": enough,
        "token_scale": parts[0]["scale"],
        "floor": summary(floor if enough else [None] * len(floor)),
        "ceiling_information": summary([v for part in parts for v in part["ceiling"]]),
        "methods": methods,
        "verdicts": size_verdicts(values),
    }


def size_verdicts(values: dict[str, dict[str, list[float | None]]]) -> list[dict[str, Any]]:
    """Paired verdicts: every method against avg-pool, toconv-rf against toconv-init and against
    blend-pool (the token its start pins), select-rf against select-recon (what its critic adds)
    and blend-pool, and each control against toconv-rf, on every figure."""
    pairs = [(name, "avg-pool") for name in values if name != "avg-pool"]
    pairs += [("toconv-rf", "toconv-init"), ("toconv-rf", "blend-pool"), ("select-rf", "select-recon"),
              ("select-rf", "blend-pool")] + [(c, "toconv-rf") for c in CONTROLS]
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
    geometries = [resolve_geometry(side, out) for out in sizes]
    jobs = [(g, k) for g in geometries for k in range(config.num_seeds)]  # the largest grids first
    with Workers(resolve_workers(config.workers, len(jobs)), log) as workers:
        started_readers = time.perf_counter()
        instruments = workers.map(fit_instrument, [(features, config.probe, seed) for seed in config.seeds])
        ceilings = workers.map(size_ceiling, [(features, g, config) for g in geometries])
        log(f"instruments fitted at seeds {config.seeds} and ceilings at {len(sizes)} sizes in "
            f"{time.perf_counter() - started_readers:.0f} s ({workers.count} worker processes)")
        parts = workers.map(evaluate_run, [
            (features, g, config, k, instruments[k], ceilings[geometries.index(g)],
             {p: c for p, c in trained.items() if c.geometry == g}) for g, k in jobs])
    report: dict[str, Any] = {
        "config": config.to_dict(),
        "environment": {**environment(), "workers": workers.count, "threads_per_worker": workers.threads},
        "data": {**features.source, "train_images": features.train.shape[0],
                 "val_images": features.val.shape[0], "tokens": num_tokens, "dim": dim,
                 "input_grid_size": side},
        "checkpoints": list(trained),
        "instruments": [inst.describe(features) for inst in instruments],
        "sizes": {str(g.output_grid_size): merge_runs(g, [part for (h, _), part in zip(jobs, parts, strict=True)
                                                            if h == g])
                  for g in geometries},
    }
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
