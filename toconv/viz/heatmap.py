"""RF quality heatmap as a PNG."""

from __future__ import annotations

from pathlib import Path

from toconv.metrics import RFStats


def plot_rf_heatmap(stats: RFStats, path: str | Path, title: str | None = None) -> Path:
    """Write the per-RF cosine map with row/column means and bucket counts to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cos = stats.cos_map.numpy()
    n = cos.shape[0]
    fig, ax = plt.subplots(figsize=(6.4, 5.6), constrained_layout=True)
    im = ax.imshow(cos, cmap="RdYlGn", vmin=min(0.5, float(cos.min())), vmax=1.0)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{cos[i, j]:.2f}", ha="center", va="center", fontsize=7 if n > 8 else 9)
    ax.set_xticks(range(n), [f"{v:.2f}" for v in stats.col_means.tolist()], rotation=90, fontsize=7)
    ax.set_yticks(range(n), [f"{v:.2f}" for v in stats.row_means.tolist()], fontsize=7)
    ax.set_xlabel("output column (tick: column mean cosine)")
    ax.set_ylabel("output row (tick: row mean cosine)")
    counts = ", ".join(f"{k} {v}" for k, v in stats.buckets.items())
    ax.set_title(f"{title or 'RF reconstruction cosine'}\nmean {stats.mean_cosine:.3f} | {counts}",
                 fontsize=10)
    fig.colorbar(im, ax=ax, label="mean cosine over the RF")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
