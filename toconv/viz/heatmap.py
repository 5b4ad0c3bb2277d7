"""RF quality heatmap as a PNG."""

from __future__ import annotations

from pathlib import Path

from toconv.metrics import RFStats
from toconv.metrics.rf_stats import BUCKETS


def color_range(values: list[float], min_span: float = 0.02) -> tuple[float, float]:
    """(low, high) of a colour scale that follows ``values`` (at least ``min_span`` wide, so
    near-identical values do not turn noise into the full range of colours)."""
    low, high = min(values), max(values)
    if high - low < min_span:
        middle = (low + high) / 2
        low, high = middle - min_span / 2, middle + min_span / 2
    return low, high


def bucket_thresholds() -> list[tuple[float, str]]:
    """(cosine, label) of the boundaries between quality buckets, ascending."""
    lows = sorted((low, name) for name, (low, _) in BUCKETS.items() if low != float("-inf"))
    return [(low, f"{name} ≥ {low:g}") for low, name in lows]


def plot_rf_heatmap(stats: RFStats, path: str | Path, title: str | None = None) -> Path:
    """Write the per-RF cosine map to ``path`` (PNG).

    Ticks are output row / column indices; the row and column means are strips beside and below
    the map in the same colours. The colour scale follows the data (see :func:`color_range`),
    and the bucket thresholds that fall inside it are marked on the colour bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cos = stats.cos_map.numpy()
    rows, cols = stats.row_means.numpy(), stats.col_means.numpy()
    n = cos.shape[0]
    norm = Normalize(*color_range(cos.flatten().tolist()))
    cmap = "viridis"
    fig, ax = plt.subplots(figsize=(7.6, 7.0))
    divider = make_axes_locatable(ax)
    right = divider.append_axes("right", size=f"{100 / n:.1f}%", pad=0.08, sharey=ax)
    bottom = divider.append_axes("bottom", size=f"{100 / n:.1f}%", pad=0.08, sharex=ax)
    bar_ax = divider.append_axes("right", size="4%", pad=1.0)
    im = ax.imshow(cos, cmap=cmap, norm=norm, interpolation="nearest")
    right.imshow(rows[:, None], cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    bottom.imshow(cols[None, :], cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")

    def label(axis, x: float, y: float, value: float, size: float) -> None:
        dark = norm(value) < 0.5
        axis.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=size,
                  color="white" if dark else "black")

    size = 7 if n > 8 else 9
    if n <= 12:
        for i in range(n):
            for j in range(n):
                label(ax, j, i, float(cos[i, j]), size)
    for i in range(n):
        label(right, 0, i, float(rows[i]), 6.5)
        label(bottom, i, 0, float(cols[i]), 6.5)
    step = 1 if n <= 12 else 2
    ax.set_xticks(range(0, n, step))
    ax.set_yticks(range(0, n, step))
    ax.tick_params(labelbottom=False, labelsize=8)
    ax.set_ylabel("output row")
    bottom.set_yticks([0], ["col\nmean"], fontsize=8)
    bottom.tick_params(labelsize=8)
    bottom.set_xlabel("output column")
    right.set_xticks([0], ["row\nmean"], fontsize=8)
    right.tick_params(labelleft=False)
    counts = ", ".join(f"{k} {v}" for k, v in stats.buckets.items())
    ax.set_title(f"{title or 'RF reconstruction cosine'}\nmean {stats.mean_cosine:.3f} | {counts}",
                 fontsize=10)
    bar = fig.colorbar(im, cax=bar_ax, label="mean cosine over the RF (scale: this map's range)")
    for threshold, name in bucket_thresholds():
        if norm.vmin < threshold < norm.vmax:
            bar_ax.axhline(threshold, color="red", lw=1.5)
            bar_ax.text(-0.15, threshold, name, color="red", fontsize=7, ha="right", va="center",
                        transform=bar_ax.get_yaxis_transform())
    bar.ax.tick_params(labelsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
