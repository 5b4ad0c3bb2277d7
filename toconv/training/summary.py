"""The end-of-run summary: a plain-text table for the terminal and ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of the terminal table from a :func:`write_summary`-style dict."""
    val, data, run = summary["validation"], summary["data"], summary["run"]
    buckets = ", ".join(f"{k} {v}" for k, v in val["buckets"].items())
    samples = run["train_samples_per_second"]
    speed = f"{samples:.1f} samples/s" if samples else "no training step in this call"
    rows = [
        ("run folder", run["folder"]),
        ("encoder", f"{run['encoder']} ({run['grid']} tokens of width {run['hidden_dim']})"),
        ("compressor", f"{run['geometry']} ({run['design']} design)"),
        ("images train / val", f"{data['train_images']} / {data['val_images']}"),
        ("skipped files", str(data["skipped_files"])),
        ("cache per image", data["cache"]),
        ("steps / epochs", f"{run['steps']} / {run['epochs_completed']}"),
        ("wall time", f"{run['wall_seconds']:.1f} s ({speed})"),
        ("val reconstruction cosine", f"{val['cosine']:.4f}"),
        ("val RF cosine (mean of RFs)", f"{val['rf_cosine_mean']:.4f}"),
        ("val MSE", f"{val['mse']:.4f}"),
        ("val Wasserstein estimate", f"{val['wasserstein']:.4f}"),
        ("RF buckets", buckets),
        ("worst row / column mean", f"{min(val['row_means']):.3f} / {min(val['col_means']):.3f}"),
        ("best checkpoint", f"{summary['checkpoints']['best']} (epoch {summary['checkpoints']['best_epoch']})"),
        ("heatmap", summary["visualizations"]["heatmap"]),
    ]
    return rows


def format_table(rows: list[tuple[str, str]], title: str = "toconv training summary") -> str:
    """Two aligned columns under a title, framed by rules."""
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    rule = "-" * max(len(title), *(len(line) for line in lines))
    return "\n".join([rule, title, rule, *lines, rule])


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    path.write_text(json.dumps(summary, indent=1))
    return path
