"""One receptive field, original vs reconstructed tokens, as a PNG a person can read."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
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


def plot_rf_example(grid_tokens: Tensor, pred: Tensor, rf: RFGeometry, rf_index: int,
                    path: str | Path, title: str | None = None) -> Path:
    """Write a 4-panel figure for RF ``rf_index`` of one image.

    Panels: the image's token grid in PCA colours (top-3 components of this image's tokens) with
    the RF's window outlined; the RF's original and reconstructed tokens in the same colours; the
    cosine of each rebuilt token with its original.

    Args:
        grid_tokens: (N, C) original tokens of the image, row-major.
        pred: (R, C) reconstructed tokens of the RF's k×k window (invalid slots ignored).
        rf: receptive-field geometry of the compressor.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    conv = rf.conv
    n, k, out = conv.input_grid_size, conv.kernel_size, conv.output_grid_size
    valid = rf.mask[rf_index]
    target = grid_tokens[rf.indices[rf_index]]  # (R, C)
    grid_rgb, target_rgb, pred_rgb = pca_rgb(grid_tokens, target, pred)

    def window(rgb: Tensor) -> Tensor:
        """(R, 3) slot colours -> (k, k, 3) image, invalid slots gray."""
        return rearrange(torch.where(valid[:, None], rgb, 0.5), "(dy dx) c -> dy dx c", dy=k)

    cosine = torch.where(valid, F.cosine_similarity(pred.float(), target.float(), dim=-1),
                         torch.full((k * k,), float("nan")))
    row, col = divmod(rf_index, out)
    top, left = row * conv.stride - conv.padding, col * conv.stride - conv.padding

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.8), constrained_layout=True)
    axes[0].imshow(rearrange(grid_rgb, "(h w) c -> h w c", h=n).numpy(), interpolation="nearest")
    axes[0].add_patch(Rectangle((left - 0.5, top - 0.5), k, k, fill=False, edgecolor="white", lw=2.5))
    axes[0].add_patch(Rectangle((left - 0.5, top - 0.5), k, k, fill=False, edgecolor="black", lw=1))
    axes[0].set_title(f"input tokens ({n}×{n}, PCA→RGB)\nRF {rf_index} = output ({row}, {col})")
    axes[1].imshow(window(target_rgb).numpy(), interpolation="nearest")
    axes[1].set_title(f"original RF tokens\n{int(valid.sum())} valid of {k}×{k}; gray: outside grid")
    axes[2].imshow(window(pred_rgb).numpy(), interpolation="nearest")
    axes[2].set_title("reconstructed RF tokens\n(same PCA colours)")
    im = axes[3].imshow(rearrange(cosine, "(dy dx) -> dy dx", dy=k).numpy(), cmap="RdYlGn",
                        vmin=min(0.5, float(cosine.nan_to_num(1.0).min())), vmax=1.0)
    for r in range(k * k):
        if valid[r]:
            axes[3].text(r % k, r // k, f"{cosine[r]:.2f}", ha="center", va="center", fontsize=9)
    axes[3].set_title(f"cosine(original, reconstructed)\nmean {float(cosine.nanmean()):.3f}")
    fig.colorbar(im, ax=axes[3], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
