"""Settings of the measuring models (probes), shared by the metrics that train one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeSettings:
    """The measuring models: one RF decoder per method and the plug-in attention-pooling head."""

    decoder_layers: int = 2
    decoder_hidden_dim: int | None = None
    """None: the token width. A narrower probe is a bottleneck that favours codes whose information
    sits in few directions (pooling) over codes that use every channel (PCA)."""
    decoder_steps: int = 200
    decoder_batch_tokens: int = 256
    decoder_lr: float = 1e-3
    head_steps: int = 200
    head_batch_size: int = 32
    head_lr: float = 1e-3
    head_heads: int = 8
    frechet_samples_per_image: int = 36
    swd_projections: int = 256


def chunks(num: int, size: int) -> Iterator[slice]:
    """Slices of ``size`` covering ``range(num)``."""
    return (slice(i, min(i + size, num)) for i in range(0, num, size))
