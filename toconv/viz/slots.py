"""Which original tokens each slot took, on a real photo: ``python -m toconv.viz.slots --help``."""

from __future__ import annotations

import argparse
import colorsys
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw
from torch import Tensor


def slot_colours(count: int) -> np.ndarray:
    """(count, 3) uint8 well-separated colours (hues spaced by the golden ratio)."""
    hues = (np.arange(count) * 0.618034) % 1.0
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.85, 0.95)] for h in hues],
                    dtype=np.uint8)


def plot_slot_assignments(photo: Image.Image, assignments: Tensor, path: str | Path,
                          title: str = "", alpha: float = 0.55) -> Path:
    """Write a PNG of ``photo`` beside the same photo with each token coloured by its slot and the
    slots' borders drawn.

    Args:
        photo: the square image the tokens were computed from.
        assignments: (N,) long, each token's slot (N = grid², row-major).
    """
    n = assignments.numel()
    grid = round(n**0.5)
    if grid * grid != n:
        raise ValueError(f"expected the assignments of a square token grid, got N={n}")
    size = photo.size[0]
    owner = rearrange(assignments.cpu(), "(h w) -> h w", h=grid).numpy()
    cell = np.kron(owner, np.ones((-(-size // grid),) * 2, dtype=np.int64))[:size, :size]
    base = np.asarray(photo.convert("RGB").resize((size, size)), dtype=np.float32)
    colours = slot_colours(int(owner.max()) + 1)[cell].astype(np.float32)
    overlay = (1 - alpha) * base + alpha * colours
    border = np.zeros((size, size), dtype=bool)
    border[1:] |= cell[1:] != cell[:-1]
    border[:, 1:] |= cell[:, 1:] != cell[:, :-1]
    overlay[border] = 255
    header = 24 if title else 0
    canvas = Image.new("RGB", (2 * size + 8, size + header), "white")
    canvas.paste(photo.convert("RGB").resize((size, size)), (0, header))
    canvas.paste(Image.fromarray(overlay.astype(np.uint8)), (size + 8, header))
    if title:
        ImageDraw.Draw(canvas).text((4, 6), title, fill="black")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    from toconv.data.photos import packaged_photos
    from toconv.encoders import build_encoder
    from toconv.encoders.base import resize_center_crop
    from toconv.models import load_compressor
    from toconv.objective.slots import train_slots

    parser = argparse.ArgumentParser(prog="python -m toconv.viz.slots", description=__doc__)
    parser.add_argument("--photo", default="farm_cow", help="packaged photo name or an image path")
    parser.add_argument("--checkpoint", type=Path,
                        help="a slots checkpoint for dinov2-s336 tokens; default: train one "
                             "(recipe slots, seed 0) on the packaged photos")
    parser.add_argument("--side", type=int, default=8, help="K = side² slots when training")
    parser.add_argument("--out", type=Path, default=Path("slots.png"))
    args = parser.parse_args(argv)
    encoder = build_encoder("dinov2-s336", device="cpu")
    photo_path = Path(args.photo)
    if not photo_path.is_file():
        photo_path = packaged_photos() / f"{args.photo}.jpg"
    photo = resize_center_crop(Image.open(photo_path), encoder.image_size)
    if args.checkpoint:
        model = load_compressor(args.checkpoint).eval()
        source = str(args.checkpoint)
    else:
        files = sorted(packaged_photos().glob("*.jpg"))
        tokens = torch.cat([encoder([Image.open(f) for f in files[i: i + 16]]).patch_tokens.float()
                            for i in range(0, len(files), 16)])
        model, _ = train_slots(tokens, args.side, "slots", seed=0)
        source = f"recipe slots on the {len(files)} packaged photos"
    with torch.no_grad():
        owner = model.assignments(encoder([photo]).patch_tokens.float())[0]
    used = int(owner.unique().numel())
    title = f"{photo_path.stem}: {used} of {model.num_slots} slots hold tokens ({source})"
    print(plot_slot_assignments(photo, owner, args.out, title))


if __name__ == "__main__":
    main()
