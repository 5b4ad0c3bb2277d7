"""Choose what the default start pins on the training images alone.

The benchmark's training split is cut in two: the first ``--fit`` images fit k-means, the frozen
linear and MLP readers (:class:`toconv.bench.runner.Instrument`) and every start; the rest are
read. The validation split is never opened, so a choice made here can be checked on it after.
Printed per output size: the frozen readers' accuracy (mean over the instrument seeds, then each
seed) for average pooling, keep-center, blends ``w·centre + (1 − w)·cell mean`` and the pinned
starts (``pin_token`` × pinned directions p).

    python benchmarks/select_start.py --cache .cache/features/dinov2-s336-imagenet-sample-800
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch

from toconv.bench.data import Features, load_cache
from toconv.bench.methods import Method
from toconv.bench.reducers import weighted_window
from toconv.bench.runner import Instrument, method_tokens
from toconv.geometry import RFGeometry, resolve_geometry
from toconv.metrics import ProbeSettings
from toconv.models import init_compressor
from toconv.models.pca_init import pinned_token_weights


def read(method: Method, features: Features, instruments: list[Instrument]) -> list[tuple[float, float]]:
    """(linear, MLP) frozen-reader accuracy of ``method`` on the read images, per instrument."""
    z, covering = method_tokens(method, features.val)
    out = []
    for inst in instruments:
        scores = [reader.score(z, inst.val_labels, covering) for reader in (inst.linear, inst.mlp)]
        out.append(tuple(float(s["correct"].sum() / s["count"].sum()) for s in scores))
    return out


def blend(output: int, weight: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``weight``·centre token + (1 − ``weight``)·cell mean of every window."""
    geometry = resolve_geometry(24, output)
    rf = RFGeometry.from_conv(geometry)
    slots = (weight * pinned_token_weights(geometry, "center")
             + (1 - weight) * pinned_token_weights(geometry, "mean"))
    return lambda x: weighted_window(x, rf, slots)


def select_rows(train: torch.Tensor, fit: int, seeds: list[int], sizes: list[int], pinned: list[int],
                settings: ProbeSettings | None = None) -> list[dict[str, Any]]:
    """Every row of the table for (n, N, C) training tokens: the first ``fit`` images fit, the rest
    are read. Each row: ``size``, ``method`` and ``scores`` [(linear, MLP) per instrument seed]."""
    if not 0 < fit < len(train):
        raise ValueError(f"--fit: expected 1 to {len(train) - 1} of the {len(train)} training images, got {fit}")
    cls = train.mean(1)  # unused by the readers
    features = Features(train[:fit], cls[:fit], train[fit:], cls[fit:])
    instruments = [Instrument.fit(features, settings or ProbeSettings(), seed) for seed in seeds]
    rows = []
    for output in sizes:
        methods: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [
            (f"blend w={w}" if 0 < w < 1 else {0.0: "avg-pool", 1.0: "keep-center"}[w], blend(output, w))
            for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
        for token in ("mean", "center", "blend"):
            for p in pinned:
                methods.append((f"start {token}, p={p}",
                                init_compressor(features.train, output, "pca", 0, p, token).eval()))
        rows += [{"size": output, "method": name, "scores": read(Method(name, reduce), features, instruments)}
                 for name, reduce in methods]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, help="a benchmark feature cache (train/ and val/)")
    parser.add_argument("--fit", type=int, default=512, help="training images that fit; the rest are read")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="instrument seeds")
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 8, 6])
    parser.add_argument("--pinned", type=int, nargs="+", default=[64, 192])
    args = parser.parse_args()
    train = load_cache(args.cache).train
    try:
        rows = select_rows(train, args.fit, args.seeds, args.sizes, args.pinned)
    except ValueError as error:  # a --fit or --sizes the data cannot take: one line, no traceback
        parser.error(str(error))
    print(f"fit on {args.fit} training images, read on {len(train) - args.fit}; instrument seeds {args.seeds}")
    print("| size | method | reader linear | reader MLP | per seed (linear / MLP) |\n|---|---|---|---|---|")
    for row in rows:
        linear, mlp = (statistics.fmean(s[i] for s in row["scores"]) for i in (0, 1))
        seeds = " ".join(f"{a:.3f} / {b:.3f}" for a, b in row["scores"])
        print(f"| 24→{row['size']} | {row['method']} | {linear:.4f} | {mlp:.4f} | {seeds} |")


if __name__ == "__main__":
    main()
