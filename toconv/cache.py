"""``python -m toconv.cache``: precompute frozen-encoder tokens for the train and val splits.

Example (the packaged photos; any folder of images works)::

    python -m toconv.cache --encoder dinov2-s336 --images toconv/photos/images \\
        --out .cache/features/dinov2-s336

The cache stores (N + 1) x C fp16 values per image: 443,136 bytes for dinov2-s336 (24x24x384),
1,181,696 bytes for clip-l336 (24x24x1024). Its size is checked against the free disk space
before anything is written.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from toconv.training.extras import missing_package_message

PROG = "python -m toconv.cache"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from toconv.encoders import list_encoders

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Encode an image folder once with a frozen encoder; write sharded fp16 tokens "
        "to OUT/<split> for training from the cache.",
    )
    parser.add_argument(
        "--encoder",
        required=True,
        help=f"preset ({', '.join(list_encoders())}), local CLIP model folder or hub id",
    )
    parser.add_argument(
        "--images",
        required=True,
        type=Path,
        help="ImageNet-layout folder (train/, val/) or a plain folder of images",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="cache folder; splits go to OUT/<split>"
    )
    parser.add_argument("--split", nargs="+", choices=("train", "val"), default=["train", "val"])
    parser.add_argument(
        "--subset-size",
        type=int,
        default=None,
        help="deterministic random subset of each split (default: all images)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="validation share of a plain folder, at least one image (ignored for ImageNet layout)",
    )
    parser.add_argument(
        "--val-size",
        type=int,
        default=None,
        help="validation images of a plain folder as a count (at most half); replaces --val-fraction",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the subset")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=256, help="images per shard file")
    parser.add_argument(
        "--num-workers", type=int, default=0, help="DataLoader workers decoding images"
    )
    parser.add_argument("--device", default="cpu", help="torch device of the encoder, e.g. cuda:0")
    parser.add_argument(
        "--dtype",
        default=None,
        help="encoder compute dtype (float32, float16, bfloat16); default: "
        "float32 on CPU, float16 on GPU",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="rebuild even if a cache is complete"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        from toconv.data import ImageFolderDataset, build_feature_cache
        from toconv.encoders import build_encoder
    except ImportError as err:  # PIL, tqdm: the train extra
        raise SystemExit(missing_package_message(err, PROG)) from None
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        encoder = build_encoder(args.encoder, device=args.device, dtype=args.dtype)
        datasets = {
            split: ImageFolderDataset(
                args.images,
                split=split,
                val_fraction=args.val_fraction,
                subset_size=args.subset_size,
                seed=args.seed,
                val_size=args.val_size,
            )
            for split in args.split
        }
    except ImportError as err:  # the encoder's optional packages
        raise SystemExit(missing_package_message(err, PROG)) from None
    except (OSError, ValueError) as err:  # missing model or files; no hub
        raise SystemExit(f"{PROG}: error: {err}") from None
    for split, dataset in datasets.items():
        started = time.perf_counter()
        try:
            cache = build_feature_cache(
                encoder,
                dataset,
                args.out / split,
                batch_size=args.batch_size,
                shard_size=args.shard_size,
                num_workers=args.num_workers,
                progress=not args.quiet,
                overwrite=args.overwrite,
            )
        except ValueError as err:  # no room on the disk (CacheTooLarge); no decodable image
            raise SystemExit(f"{PROG}: error: {err}") from None
        meta = cache.meta
        print(
            f"{split}: {len(cache)} images ({len(meta['skipped'])} skipped) -> {args.out / split}\n"
            f"  {cache.num_tokens} tokens x {cache.hidden_dim} fp16 + CLS = "
            f"{cache.bytes_per_image:,} bytes per image ({cache.bytes_per_image / 2**20:.3f} MiB), "
            f"{meta['disk_bytes'] / 2**20:.1f} MiB on disk, "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
