"""The object-centric check: do the slots find the objects? On SVQ's kind of toy data.

Synthetic images of 2–5 coloured shapes (circles, squares, triangles; no overlaps) on a plain
background are encoded by the offline DINOv2-S (``dinov2-s336``, a 24×24 token grid); the true
shape masks are taken to the token grid (each token gets the majority label of its 14×14 pixels).
FG-ARI (the adjusted Rand index over the tokens of the shapes, background left out) compares
each method's grouping with the true masks: the slots' assignments (trained with the ``slots``
recipe, and their untrained k-means start), beside per-image k-means of the same tokens with the
same K. Run ``python -m toconv.bench.shapes --help``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from toconv.models.kmeans import kmeans
from toconv.models.slots import init_slots
from toconv.objective.slots import train_slots

#: Saturated colours of the shapes (RGB) and the background's.
COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230]], dtype=np.uint8)
BACKGROUND = np.array([40, 40, 40], dtype=np.uint8)
KINDS = ("circle", "square", "triangle")


def _shape_mask(kind: str, cy: float, cx: float, r: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    if kind == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    if kind == "square":
        return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    top = cy - r  # upright isosceles triangle of height and base 2r
    return (yy >= top) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - top) / 2)


def draw_shapes(count: int, size: int = 336, seed: int = 0,
                objects: tuple[int, int] = (2, 5)) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images of ``objects[0]``–``objects[1]`` non-overlapping shapes.

    Returns images (count, size, size, 3) uint8 and masks (count, size, size) int64: 0 for the
    background, 1… for the shapes in drawing order.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images = np.broadcast_to(BACKGROUND, (count, size, size, 3)).copy()
    masks = np.zeros((count, size, size), dtype=np.int64)
    for i in range(count):
        placed, target = 0, rng.integers(objects[0], objects[1] + 1)
        for _ in range(200):  # rejection sampling of free places
            if placed == target:
                break
            r = rng.uniform(0.08, 0.16) * size
            cy, cx = rng.uniform(r, size - r, 2)
            shape = _shape_mask(KINDS[rng.integers(len(KINDS))], cy, cx, r, yy, xx)
            if (masks[i][shape] != 0).any() or shape.sum() == 0:
                continue
            placed += 1
            masks[i][shape] = placed
            images[i][shape] = COLOURS[rng.integers(len(COLOURS))]
    return images, masks


def token_labels(masks: np.ndarray, grid: int = 24) -> Tensor:
    """(B, H, W) pixel labels → (B, grid²) long: each token's majority label."""
    labels = torch.from_numpy(masks)
    onehot = rearrange(F.one_hot(labels, int(labels.max()) + 1).float(), "b h w l -> b l h w")
    return rearrange(F.adaptive_avg_pool2d(onehot, grid).argmax(dim=1), "b h w -> b (h w)")


def _pairs(x: Tensor) -> Tensor:
    return x * (x - 1) / 2


def fg_ari(truth: Tensor, pred: Tensor, background: int = 0) -> Tensor:
    """Adjusted Rand index between two labelings of the same tokens, over the tokens whose true
    label is not ``background``; one value per image.

    Args:
        truth, pred: (B, N) long labels.
    Returns:
        (B,) float; 1 where both labelings of the foreground are trivial in the same way (one
        group each, or all singletons), where the index is 0/0.
    """
    fg = (truth != background).double()
    t = F.one_hot(truth).double() * fg.unsqueeze(-1)  # (B, N, T), background rows zero
    p = F.one_hot(pred).double()
    table = torch.einsum("bnt,bnp->btp", t, p)
    index = _pairs(table).sum((1, 2))
    rows, cols = _pairs(table.sum(2)).sum(1), _pairs(table.sum(1)).sum(1)
    expected = rows * cols / _pairs(fg.sum(1)).clamp_min(1)
    top = (rows + cols) / 2 - expected
    return torch.where(top == 0, torch.ones_like(top), (index - expected) / torch.where(top == 0, 1, top)).float()


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def encode(images: np.ndarray, batch_size: int = 16) -> Tensor:
    """(B, H, W, 3) uint8 → (B, 576, 384) DINOv2-S tokens (the offline ONNX encoder)."""
    from PIL import Image

    from toconv.encoders import build_encoder

    encoder = build_encoder("dinov2-s336", device="cpu")
    out = [encoder([Image.fromarray(im) for im in images[i: i + batch_size]]).patch_tokens.float()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def shape_tokens(count: int, cache: Path | None = None) -> tuple[Tensor, Tensor]:
    """DINOv2-S tokens (count, 576, 384) and token labels (count, 576) of ``count`` shape images
    (seed 0), read from / written to ``cache`` (a torch file) when given."""
    if cache is not None and cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if len(saved["tokens"]) >= count:
            return saved["tokens"][:count], saved["labels"][:count]
    images, masks = draw_shapes(count, seed=0)
    tokens, labels = encode(images), token_labels(masks)
    if cache is not None:
        torch.save({"tokens": tokens, "labels": labels}, cache)
    return tokens, labels


def run(num_train: int = 256, num_val: int = 128, output_grid_size: int = 3, seeds: int = 3,
        cache: Path | None = None, first_seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Draw, encode, fit and score (module docstring) at seeds ``first_seed, first_seed + 1, …``;
    returns per-method FG-ARI over the seeds."""
    started = time.perf_counter()
    tokens, labels = shape_tokens(num_train + num_val, cache)
    train, val, truth = tokens[:num_train], tokens[num_train:], labels[num_train:]
    log(f"{len(tokens)} images' tokens in {time.perf_counter() - started:.0f} s")
    k = output_grid_size**2
    scores: dict[str, list[float]] = {"kmeans": [], "slots-start": [], "slots": []}
    seconds: list[float] = []
    for seed in range(first_seed, first_seed + seeds):
        _, labels = kmeans(val, k, generator=torch.Generator().manual_seed(seed))
        scores["kmeans"].append(float(fg_ari(truth, labels).mean()))
        with torch.no_grad():
            start = init_slots(train[:128], output_grid_size, seed=seed)
            scores["slots-start"].append(float(fg_ari(truth, start.assignments(val)).mean()))
        t0 = time.perf_counter()
        model, _ = train_slots(train, output_grid_size, "slots", seed)
        seconds.append(time.perf_counter() - t0)
        with torch.no_grad():
            scores["slots"].append(float(fg_ari(truth, model.assignments(val)).mean()))
        log(f"seed {seed}: " + ", ".join(f"{m} {v[-1]:.3f}" for m, v in scores.items())
            + f" (slots trained in {seconds[-1]:.0f} s)")
    return {"k": k, "train_images": num_train, "val_images": num_val, "seeds": seeds,
            "fg_ari": {m: dict(zip(("mean", "std"), _mean_std(v), strict=True)) | {"runs": v}
                       for m, v in scores.items()},
            "slots_train_seconds": _mean_std(seconds)[0],
            "wall_seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m toconv.bench.shapes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=256, help="training images (default 256)")
    parser.add_argument("--val", type=int, default=128, help="scored images (default 128)")
    parser.add_argument("--side", type=int, default=3, help="K = side² slots / clusters (default 3)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    parser.add_argument("--cache", type=Path, help="keep the encoded tokens in this file")
    args = parser.parse_args(argv)
    result = run(args.train, args.val, args.side, args.seeds, args.cache, args.seed)
    for name, s in result["fg_ari"].items():
        print(f"{name:12s} FG-ARI {s['mean']:.3f} ± {s['std']:.3f}  (K={result['k']}, {args.seeds} seeds)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
