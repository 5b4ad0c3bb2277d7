"""``python -m toconv.bench``: compare ToConv with other token reducers; writes a report folder.

``--checkpoint runs/NAME/latest.safetensors`` (repeatable) scores trained compressors as extra
rows beside the baselines.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from toconv.bench.config import DEFAULT_METHODS, QUICK_METHODS, full_config, quick_config
from toconv.bench.data import build_cache, load_cache, synthetic_features
from toconv.bench.methods import list_methods
from toconv.bench.reducers import grid_side
from toconv.bench.report import write_report
from toconv.bench.runner import load_checkpoints, run_benchmark
from toconv.data import packaged_photos
from toconv.metrics import cell_geometry


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m toconv.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few minutes: fewer steps and images")
    parser.add_argument("--cache", type=Path, help="feature cache folder with train/ and val/")
    parser.add_argument("--images", type=Path, default=None,
                        help="image folder encoded into --cache-out when --cache is not given "
                             "(default: the 160 photos packaged with toconv)")
    parser.add_argument("--encoder", default="dinov2-s336", help="encoder preset or local CLIP folder")
    parser.add_argument("--cache-out", type=Path, default=None,
                        help="where --images is encoded (default .cache/features/<encoder>-<folder>)")
    parser.add_argument("--synthetic", action="store_true", help="generated smooth tokens (no images)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument("--output-grid-sizes", "--sizes", dest="output_grid_sizes", type=int, nargs="+",
                        default=None, help="output grid sides (default 12 8 6)")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[],
                        help="a trained toconv checkpoint to score beside the baselines (repeatable)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"registered methods to run, in table order (default: {' '.join(DEFAULT_METHODS)}; "
                             f"--quick: {' '.join(QUICK_METHODS)}; "
                             f"also: {' '.join(sorted(set(list_methods()) - set(DEFAULT_METHODS)))})")
    parser.add_argument("--seeds", type=int, default=None,
                        help="how many seeds the seeded methods run at (default 3, quick 2)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes the runs are spread over (default: one per core, at most one "
                             "per run; 1: all in this process)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = {"seed": args.seed,
                 **({"output_grid_sizes": tuple(args.output_grid_sizes)} if args.output_grid_sizes else {}),
                 **({"methods": tuple(args.methods)} if args.methods else {}),
                 **({"num_seeds": args.seeds} if args.seeds is not None else {}),
                 **({"workers": args.workers} if args.workers is not None else {})}
    encoder = None if args.synthetic else args.encoder
    try:
        config = quick_config(**overrides) if args.quick else full_config(**overrides)
        if args.synthetic:
            features = synthetic_features(640, 160, seed=args.seed)
        elif args.cache:
            features = load_cache(args.cache)
        else:
            images = packaged_photos() if args.images is None else args.images
            folder = "photos" if args.images is None else images.resolve().name
            cache_out = args.cache_out or Path(".cache/features") / f"{Path(args.encoder).name}-{folder}"
            features = build_cache(args.encoder, images, cache_out, seed=args.seed)
        checkpoints = load_checkpoints(args.checkpoint, features)
        unknown = sorted(set(config.methods) - set(list_methods()))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; registered: {', '.join(list_methods())}")
        for size in config.output_grid_sizes:  # every figure is scored on whole grid cells
            cell_geometry(grid_side(features.train.shape[1]), size)
    except (ImportError, OSError, ValueError) as err:
        raise SystemExit(f"python -m toconv.bench: error: {err}") from err
    report = run_benchmark(features, config, encoder, checkpoints=checkpoints)
    out = write_report(report, args.out)
    print(f"report written to {out} ({report['total_seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
