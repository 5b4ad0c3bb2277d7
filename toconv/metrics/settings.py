"""Settings of the measuring models (probes), shared by the metrics that train one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeSettings:
    """The measuring models: frozen readers fitted on real tokens, the plug-in head and the
    distribution distances' sampling."""

    probe_train_images: int | None = 320
    """Training images the closed-form information probes are fitted on (None: all)."""
    reader_clusters: int = 64
    """K of the k-means pseudo-labels both readers read."""
    reader_fit_tokens: int = 65536
    reader_kmeans_iters: int = 30
    reader_steps: int = 400
    reader_batch_tokens: int = 4096
    reader_lr: float = 1e-2
    position_width: int = 128
    position_layers: int = 2
    position_heads: int = 4
    position_steps: int = 800
    position_batch_size: int = 16
    position_queries: int = 144
    position_lr: float = 1e-3
    head_steps: int = 200
    head_batch_size: int = 32
    head_lr: float = 1e-3
    head_heads: int = 8
    frechet_samples_per_image: int = 36
    frechet_draws: int = 5
    """Draws of the reference, floor and method samples (the floor's spread is over these)."""
    swd_projections: int = 256

def chunks(num: int, size: int) -> Iterator[slice]:
    """Slices of ``size`` covering ``range(num)``."""
    return (slice(i, min(i + size, num)) for i in range(0, num, size))
