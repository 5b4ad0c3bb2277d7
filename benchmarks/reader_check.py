"""Does a reader trained on compressed grids use what a method's tokens keep of their cells?

For each output size and instrument seed (the benchmark's :class:`toconv.bench.runner.Instrument`),
every method's tokens are read three ways, each scored on the validation images against the labels
of all 576 original tokens:

* ``trained``: the benchmark's trained reader (:class:`toconv.metrics.TrainedReader`);
* ``trained+locality``: the same with a learned distance bias in its query attention
  (``ProbeSettings.trained_locality``), so a query can lean on the tokens at its own position;
* ``decoded``: every original token rebuilt from its covering token by the information probe's
  closed-form per-slot maps (:func:`toconv.metrics.fit_slot_maps`, fitted on the training images),
  then read by the frozen MLP reader: how much of what the reader needs a linear decoding recovers.

``--identity`` adds the full 576-token grid (no compression) to the trained readers, once per seed:
how far each trained reader is from reading real tokens. Verdicts as in the benchmark: paired over
(instrument seed, bootstrap draw) runs, better or worse beyond 2 std of the difference.

    python benchmarks/reader_check.py --cache .cache/features/dinov2-s336-imagenet-sample-800
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

from torch import Tensor

from toconv.bench.config import full_config
from toconv.bench.data import Features, load_cache
from toconv.bench.methods import MethodContext, build_methods, list_methods
from toconv.bench.reducers import grid_side
from toconv.bench.runner import (
    Instrument,
    bootstrap_images,
    fit_instrument,
    method_tokens,
    paired_verdict,
)
from toconv.bench.workers import Workers, resolve_workers
from toconv.geometry import resolve_geometry
from toconv.metrics import ProbeSettings, TrainedReader, cell_geometry, decode_cells, fit_slot_maps
from toconv.metrics.information import covering_tokens

READINGS = ("trained", "trained+locality", "decoded")
Stats = dict[str, Tensor]


def trained_readings(train_z: Tensor, val_z: Tensor, inst: Instrument, settings: ProbeSettings) -> dict[str, Stats]:
    """Both trained readers on one method's (n, M, C) tokens: per val image sums and counts."""
    out = {}
    for name, locality in (("trained", False), ("trained+locality", True)):
        reader = TrainedReader(train_z, inst.train_labels, inst.labels,
                               replace(settings, trained_locality=locality), seed=inst.seed)
        out[name] = reader.score(val_z, inst.val_labels)
    return out


def read_size(features: Features, size: int, inst: Instrument, methods: list[str],
              settings: ProbeSettings, log: Callable[[str], None] = print) -> dict[str, dict[str, Stats]]:
    """Every method at one output size, built and read at the instrument's seed."""
    geometry = resolve_geometry(grid_side(features.train.shape[1]), size)
    ctx = MethodContext(features.train, geometry, full_config(), log, seed=inst.seed)
    out = {}
    for method in build_methods(ctx, methods):
        started = time.perf_counter()
        (train_z, train_a), (val_z, val_a) = (method_tokens(method, x) for x in (features.train, features.val))
        maps = fit_slot_maps(covering_tokens(train_z, train_a), features.train, size)
        decoded = decode_cells(covering_tokens(val_z, val_a), maps, size)
        out[method.name] = {**trained_readings(train_z, val_z, inst, settings),
                            "decoded": inst.mlp.score_tokens(decoded, inst.val_labels)}
        log(f"  24→{size} {method.name} seed {inst.seed} read in {time.perf_counter() - started:.0f} s")
    return out


def read_identity(features: Features, inst: Instrument, settings: ProbeSettings,
                  log: Callable[[str], None] = print) -> dict[str, Stats]:
    """The full grid: both trained readers on the original tokens, the frozen MLP reader on them."""
    log(f"  identity seed {inst.seed}")
    return {**trained_readings(features.train, features.val, inst, settings),
            "decoded": inst.mlp.score_tokens(features.val, inst.val_labels)}


def accuracies(stats: Stats, draws: list[Tensor]) -> list[float]:
    return [float(stats["correct"][images].sum() / stats["count"][images].sum()) for images in draws]


def table(results: dict[int, list[dict[str, dict[str, Stats]]]], draws: list[Tensor],
          identity: list[dict[str, Stats]] | None) -> list[str]:
    """Markdown rows: each method's accuracy (mean ± std over the runs) and its paired verdict
    against avg-pool, per reading."""
    lines = ["| size | method | " + " | ".join(READINGS) + " |", "|---|---|" + "---|" * len(READINGS)]
    if identity:
        runs = {r: [a for part in identity for a in accuracies(part[r], draws)] for r in READINGS}
        lines.append("| 24→24 | identity (576 tokens) | "
                     + " | ".join(f"{statistics.fmean(v):.3f} ± {statistics.stdev(v):.3f}" for v in runs.values())
                     + " |")
    for size, parts in results.items():
        runs = {name: {r: [a for part in parts for a in accuracies(part[name][r], draws)] for r in READINGS}
                for name in parts[0]}
        for name, by_reading in runs.items():
            cells = []
            for reading, values in by_reading.items():
                cell = f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"
                if name != "avg-pool" and "avg-pool" in runs:
                    v = paired_verdict(values, runs["avg-pool"][reading], higher=True)
                    cell += f" ({v['diff']:+.3f} ± {v['std']:.3f} {v['verdict']})"
                cells.append(cell)
            lines.append(f"| 24→{size} | {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, help="a benchmark feature cache (train/ and val/)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 8, 6])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="instrument seeds")
    parser.add_argument("--methods", nargs="+", default=["avg-pool", "blend-pool", "toconv-init", "toconv-rf"])
    parser.add_argument("--identity", action="store_true", help="also read the full 576-token grid (slow)")
    parser.add_argument("--draws", type=int, default=10, help="bootstrap draws of the val images per seed")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    args = parser.parse_args()
    unknown = sorted(set(args.methods) - set(list_methods()))
    if unknown:
        parser.error(f"unknown methods {unknown}; registered: {', '.join(list_methods())}")
    try:  # a cache or size the run cannot take: one line, before any worker starts
        features = load_cache(args.cache)
        for size in args.sizes:  # the decoded reading needs whole grid cells
            cell_geometry(grid_side(features.train.shape[1]), size)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    settings = ProbeSettings()
    jobs = [(size, seed) for size in args.sizes for seed in args.seeds]
    with Workers(resolve_workers(args.workers, len(jobs) + len(args.seeds)), print) as workers:
        instruments = dict(zip(args.seeds, workers.map(fit_instrument, [(features, settings, s) for s in args.seeds]),
                               strict=True))
        calls = [(features, size, instruments[seed], args.methods, settings) for size, seed in jobs]
        parts = workers.map(read_size, calls)
        identity = (workers.map(read_identity, [(features, instruments[s], settings) for s in args.seeds])
                    if args.identity else None)
    draws = bootstrap_images(features.val.shape[0], args.draws, 0)
    results = {size: [p for (s, _), p in zip(jobs, parts, strict=True) if s == size] for size in args.sizes}
    print(f"{features.train.shape[0]} train / {features.val.shape[0]} val images; instrument seeds {args.seeds}, "
          f"{args.draws} bootstrap draws each; verdicts against avg-pool")
    print("\n".join(table(results, draws, identity)))


if __name__ == "__main__":
    main()
