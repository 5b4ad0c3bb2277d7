"""Training throughput: samples/s from the feature cache vs with the encoder in the loop.

Runs the real trainer (``toconv.train.main``) twice on the same images and settings, once
training from the feature cache (built first, not timed as training) and once encoding every batch,
and prints the training samples/s of each (evaluation excluded) plus the cache build rate.

    python benchmarks/train_throughput.py --images toconv/photos/images
    python benchmarks/train_throughput.py --images DIR --device cuda --encoder random-clip-l336

``--encoder random-clip-l336`` builds a randomly initialised CLIP ViT-L/14-336 (same shapes and
cost as the real one, no hub needed); any name ``build_encoder`` accepts works too. Extra
``key=value`` arguments go to the trainer (e.g. ``model.compressor.output_grid_size=6``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from toconv.train import main as train


def random_clip_l336(folder: Path) -> Path:
    """Save a randomly initialised CLIP ViT-L/14 at 336 px (24×24×1024 tokens) to ``folder``."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)
    CLIPVisionModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="image folder (plain or ImageNet layout)")
    parser.add_argument("--encoder", default="dinov2-s336",
                        help="encoder preset, local CLIP folder, or random-clip-l336")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--mixed-precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--num-images", type=int, default=64, help="training images (a seeded subset)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="training steps timed per mode")
    parser.add_argument("overrides", nargs="*", help="extra trainer overrides key=value")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        encoder = args.encoder
        if encoder == "random-clip-l336":
            encoder = str(random_clip_l336(Path(tmp) / "clip-l336-random"))
        common = [f"encoder.name={encoder}", f"data.imagenet_root={args.images}", "data.use_subset=true",
                  f"data.subset_size={args.num_images}", "data.val_fraction=0.05",
                  f"data.cache_root={tmp}/cache", f"experiment.output_dir={tmp}/runs",
                  f"training.batch_size={args.batch_size}", f"training.max_steps={args.steps}",
                  "training.epochs=1000", "training.save_every_steps=0", f"hardware.device={args.device}",
                  f"hardware.mixed_precision={args.mixed_precision}", *args.overrides]
        results = {}
        for mode, use_cache in (("cache", "true"), ("encoder in the loop", "false")):
            started = time.perf_counter()
            summary = train([*common, f"experiment.name={use_cache}", f"data.use_cache={use_cache}"],
                            progress=False)
            results[mode] = {"samples_per_second": summary["run"]["train_samples_per_second"],
                             "run_seconds": time.perf_counter() - started}
        meta = json.loads((next(Path(tmp, "cache").glob("*/train")) / "meta.json").read_text())
        device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"\ntrain throughput, {encoder if args.encoder != 'random-clip-l336' else args.encoder}, "
              f"{device}, batch {args.batch_size}, {args.steps} steps, {args.mixed_precision}")
        print(f"  feature cache build: {meta['num_images'] / meta['build_seconds']:.2f} images/s "
              f"({meta['bytes_per_image']:,} bytes per image)")
        for mode, r in results.items():
            print(f"  {mode:<20} {r['samples_per_second']:8.2f} samples/s")
        print(f"  speed-up from the cache: "
              f"{results['cache']['samples_per_second'] / results['encoder in the loop']['samples_per_second']:.1f}x")


if __name__ == "__main__":
    main()
