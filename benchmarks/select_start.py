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

import torch
from einops import einsum

from toconv.bench.data import Features, load_cache
from toconv.bench.methods import Method
from toconv.bench.runner import Instrument, method_tokens
from toconv.geometry import RFGeometry, gather_rf_tokens, resolve_geometry
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
    return lambda x: einsum(gather_rf_tokens(x, rf), slots.to(x), "b m r c, r -> b m c")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, help="a benchmark feature cache (train/ and val/)")
    parser.add_argument("--fit", type=int, default=512, help="training images that fit; the rest are read")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="instrument seeds")
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 8, 6])
    parser.add_argument("--pinned", type=int, nargs="+", default=[64, 192])
    args = parser.parse_args()
    cache = load_cache(args.cache)
    train, cls, n = cache.train, cache.train_cls, len(cache.train)
    if not 0 < args.fit < n:
        raise SystemExit(f"--fit: expected 1 to {n - 1} of the {n} training images, got {args.fit}")
    features = Features(train[: args.fit], cls[: args.fit], train[args.fit :], cls[args.fit :])
    print(f"fit on {args.fit} training images, read on {n - args.fit}; instrument seeds {args.seeds}")
    instruments = [Instrument.fit(features, ProbeSettings(), seed) for seed in args.seeds]
    print("| size | method | reader linear | reader MLP | per seed (linear / MLP) |\n|---|---|---|---|---|")
    for output in args.sizes:
        rows: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [
            (f"blend w={w}" if 0 < w < 1 else {0.0: "avg-pool", 1.0: "keep-center"}[w], blend(output, w))
            for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
        for token in ("mean", "center", "blend"):
            for pinned in args.pinned:
                start = init_compressor(features.train, output, "pca", 0, pinned, token).eval()
                rows.append((f"start {token}, p={pinned}", start))
        for name, reduce in rows:
            scores = read(Method(name, reduce), features, instruments)
            linear, mlp = (statistics.fmean(s[i] for s in scores) for i in (0, 1))
            seeds = " ".join(f"{a:.3f} / {b:.3f}" for a, b in scores)
            print(f"| 24→{output} | {name} | {linear:.4f} | {mlp:.4f} | {seeds} |", flush=True)


if __name__ == "__main__":
    main()
