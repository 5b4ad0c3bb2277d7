"""Receptive fields of one photo, original vs reconstructed tokens, as a PNG a person can read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from torch import Tensor

from toconv.geometry import RFGeometry


def pca_rgb(tokens: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Project tokens to RGB with the top-3 principal components of ``tokens``.

    Args:
        tokens: (N, C) tokens the projection is fitted on.
        others: (..., C) tokens projected the same way.
    Returns:
        (N, 3) and one (..., 3) per ``others``, in [0, 1] (clipped at the fit's 1st/99th percentiles).
    """
    x = tokens.float()
    mean = x.mean(0)
    v = torch.linalg.svd(x - mean, full_matrices=False).Vh[:3].T  # (C, 3), deterministic
    proj = (x - mean) @ v
    lo, hi = torch.quantile(proj, 0.01, dim=0), torch.quantile(proj, 0.99, dim=0)

    def to_rgb(t: Tensor) -> Tensor:
        return (((t.float() - mean) @ v - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)

    return (to_rgb(x), *(to_rgb(t) for t in others))


def rf_window(rf: RFGeometry, rf_index: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) input-token bounds of RF ``rf_index``, clipped to the grid."""
    conv = rf.conv
    row, col = divmod(rf_index, conv.output_grid_size)
    top, left = row * conv.stride - conv.padding, col * conv.stride - conv.padding
    n, k = conv.input_grid_size, conv.kernel_size
    return max(top, 0), max(left, 0), min(top + k, n), min(left + k, n)


@dataclass
class RFExample:
    """One RF of the plotted image.

    Attributes:
        rf_index: the RF (output token) index, row-major.
        pred: (R, C) reconstructed tokens of the RF's k×k window (invalid slots ignored).
        image_cosine: the RF's mean cosine on this image.
        mean_cosine: the RF's mean cosine over the validation split.
    """

    rf_index: int
    pred: Tensor
    image_cosine: float
    mean_cosine: float


def plot_rf_examples(grid_tokens: Tensor, examples: list[RFExample], rf: RFGeometry,
                     path: str | Path, photo: Image.Image | None = None, photo_name: str = "",
                     title: str | None = None) -> Path:
    """Write one row of panels per RF of one image to ``path`` (PNG).

    Panels: the photo as the encoder saw it (square crop) with the RF's pixels boxed and the file
    name; the image's token grid in PCA colours (top-3 components of its tokens) with the RF
    boxed; the RF's original and reconstructed tokens in the same colours; the cosine of each
    rebuilt token with its original.

    Args:
        grid_tokens: (N, C) original tokens of the image, row-major.
        photo: the encoder's square input crop; ``None`` when the file is not there any more.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    conv = rf.conv
    n, k, out = conv.input_grid_size, conv.kernel_size, conv.output_grid_size
    preds = [example.pred for example in examples]
    targets = [grid_tokens[rf.indices[example.rf_index]] for example in examples]  # (R, C) each
    grid_rgb, *colours = pca_rgb(grid_tokens, *targets, *preds)
    target_rgbs, pred_rgbs = colours[: len(examples)], colours[len(examples):]

    def box(ax, top: float, left: float, height: float, width: float) -> None:
        for colour, lw in (("white", 3.0), ("black", 1.2)):
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fill=False,
                                   edgecolor=colour, lw=lw))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(examples), 5, figsize=(15, 3.2 * len(examples)),
                             constrained_layout=True, squeeze=False)
    for row_axes, example, target, target_rgb, pred_rgb in zip(
            axes, examples, targets, target_rgbs, pred_rgbs, strict=True):
        m = example.rf_index
        valid = rf.mask[m]
        top, left, bottom, right = rf_window(rf, m)
        row, col = divmod(m, out)
        if photo is not None:
            pixels = photo.size[0] / n
            row_axes[0].imshow(photo)
            box(row_axes[0], top * pixels, left * pixels, (bottom - top) * pixels,
                (right - left) * pixels)
        else:
            row_axes[0].text(0.5, 0.5, "photo not found", ha="center", va="center")
        row_axes[0].set_title(f"{photo_name}\nRF {m} = output ({row}, {col})", fontsize=9)
        row_axes[0].set_ylabel(f"RF {m}: cosine {example.image_cosine:.3f} here,\n"
                               f"{example.mean_cosine:.3f} validation mean", fontsize=9)
        row_axes[1].imshow(rearrange(grid_rgb, "(h w) c -> h w c", h=n).numpy(),
                           interpolation="nearest")
        box(row_axes[1], top, left, bottom - top, right - left)
        row_axes[1].set_title(f"input tokens ({n}×{n}, PCA→RGB)", fontsize=9)

        def window(rgb: Tensor, valid: Tensor = valid) -> Tensor:
            """(R, 3) slot colours -> (k, k, 3) image, invalid slots gray."""
            return rearrange(torch.where(valid[:, None], rgb, 0.5), "(dy dx) c -> dy dx c", dy=k)

        row_axes[2].imshow(window(target_rgb).numpy(), interpolation="nearest")
        row_axes[2].set_title(f"original RF tokens\n{int(valid.sum())} valid of {k}×{k}; "
                              f"gray: outside grid", fontsize=9)
        row_axes[3].imshow(window(pred_rgb).numpy(), interpolation="nearest")
        row_axes[3].set_title("reconstructed RF tokens\n(same PCA colours)", fontsize=9)
        cosine = torch.where(valid, F.cosine_similarity(example.pred.float(), target.float(), dim=-1),
                             torch.full((k * k,), float("nan")))
        im = row_axes[4].imshow(rearrange(cosine, "(dy dx) -> dy dx", dy=k).numpy(),
                                cmap="viridis", vmin=min(0.5, float(cosine.nan_to_num(1.0).min())),
                                vmax=1.0)
        for r in range(k * k):
            if valid[r]:
                row_axes[4].text(r % k, r // k, f"{cosine[r]:.2f}", ha="center", va="center",
                                 fontsize=9, color="white" if cosine[r] < 0.75 else "black")
        row_axes[4].set_title(f"cosine(original, reconstructed)\nmean {float(cosine.nanmean()):.3f}",
                              fontsize=9)
        fig.colorbar(im, ax=row_axes[4], fraction=0.046)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
