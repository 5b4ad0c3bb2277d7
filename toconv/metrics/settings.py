"""Settings of the measuring models (probes), shared by the metrics that train one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeSettings:
    """The measuring models: the information probe, the readers and the Fréchet sampling."""

    probe_train_images: int | None = 320
    """Training images the closed-form information probes are fitted on (None: all)."""
    reader_clusters: int = 64
    """K of the k-means pseudo-labels every reader reads."""
    reader_fit_tokens: int = 65536
    reader_kmeans_iters: int = 30
    reader_steps: int = 400
    reader_batch_tokens: int = 4096
    reader_lr: float = 1e-2
    mlp_width: int = 512
    """Width of the frozen MLP reader (a two-layer GELU projector, then a linear head)."""
    mlp_steps: int = 400
    mlp_batch_tokens: int = 1024
    mlp_lr: float = 1e-3
    trained_width: int = 64
    """The trained reader: width, transformer layers and heads of its :class:`QueryReader`."""
    trained_layers: int = 2
    trained_heads: int = 4
    trained_steps: int = 1000
    trained_batch_size: int = 16
    trained_queries: int = 144
    """Original positions each training image is asked about per step (all N at scoring)."""
    trained_lr: float = 3e-3
    trained_locality: bool = False
    """Whether the trained reader's queries get a learned distance bias (``QueryReader(locality=)``)."""
    frechet_tokens_per_dim: int = 10
    """Fréchet needs at least this many tokens per dimension in each set, else it is not reported."""


def chunks(num: int, size: int) -> Iterator[slice]:
    """Slices of ``size`` covering ``range(num)``."""
    return (slice(i, min(i + size, num)) for i in range(0, num, size))
