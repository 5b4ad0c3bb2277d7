"""Small building blocks shared by critics and decoders."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, width: int, out_dim: int, depth: int, dropout: float = 0.0) -> nn.Sequential:
    """``depth`` linear layers with LeakyReLU(0.2) and dropout between them (no normalisation,
    which would break the per-sample gradient penalty of WGAN-GP)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    dims = [in_dim] + [width] * (depth - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < depth - 1:
            layers += [nn.LeakyReLU(0.2), nn.Dropout(dropout)]
    return nn.Sequential(*layers)
