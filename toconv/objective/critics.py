"""WGAN critics: per token (RF design) and per token set (global design)."""

from __future__ import annotations

import torch
from einops import reduce
from torch import Tensor, nn

from toconv.layers import mlp


class RFCritic(nn.Module):
    """Scores single tokens: (..., C) → (...).

    In the RF design it sees one compressed token or one original token drawn from the same RF.
    ``event_dims = 1``: one critic sample is one token (used by the gradient penalty).
    """

    event_dims = 1

    def __init__(self, dim: int, width: int = 512, depth: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = mlp(dim, width, 1, depth, dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.net(tokens).squeeze(-1)


class GlobalCritic(nn.Module):
    """Scores token sets: (B, T, C) → (B,), invariant to token order and set size.

    A per-token MLP, then mean and max pooling over the set, then an MLP head. In the global
    design it compares the compressed set with a same-size random subset of original tokens.
    ``event_dims = 2``: one critic sample is one set.
    """

    event_dims = 2

    def __init__(self, dim: int, width: int = 512, depth: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.token_net = mlp(dim, width, width, max(depth - 1, 1), dropout)
        self.head = mlp(2 * width, width, 1, 2, dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.token_net(tokens)
        pooled = torch.cat([reduce(h, "b t d -> b d", "mean"), reduce(h, "b t d -> b d", "max")], dim=-1)
        return self.head(pooled).squeeze(-1)
