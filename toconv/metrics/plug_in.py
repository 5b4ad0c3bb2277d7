"""Whether a head trained on uncompressed tokens can read compressed ones (plug-in proxy)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from toconv.metrics.settings import ProbeSettings, chunks


class AttentionPoolHead(nn.Module):
    """Attention pooling of a token set of any size into one vector: (B, T, C) → (B, C_out).

    Learned queries (one per head) attend over layer-normed, projected tokens; no position
    embedding, so the head applies unchanged to compressed sets.
    """

    def __init__(self, dim: int, out_dim: int, width: int = 128, num_heads: int = 8) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width={width} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, 2 * width)
        self.query = nn.Parameter(torch.randn(num_heads, width // num_heads) * 0.02)
        self.out = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        keys, values = self.proj(self.norm(x)).chunk(2, dim=-1)
        keys = rearrange(keys, "b t (h d) -> b h t d", h=self.num_heads)
        values = rearrange(values, "b t (h d) -> b h t d", h=self.num_heads)
        scores = einsum(self.query, keys, "h d, b h t d -> b h t") / math.sqrt(keys.shape[-1])
        pooled = einsum(scores.softmax(dim=-1), values, "b h t, b h t d -> b h d")
        return self.out(rearrange(pooled, "b h d -> b (h d)"))


class PlugInProxy:
    """A head trained on original tokens to predict the CLS token (centred cosine), then frozen."""

    def __init__(self, train_x: Tensor, train_cls: Tensor, settings: ProbeSettings, seed: int = 0) -> None:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        self.cls_mean = train_cls.mean(0)
        self.head = AttentionPoolHead(train_x.shape[-1], train_cls.shape[-1], num_heads=settings.head_heads)
        opt = torch.optim.Adam(self.head.parameters(), settings.head_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.head_steps)
        for _ in range(settings.head_steps):
            idx = torch.randint(train_x.shape[0], (settings.head_batch_size,), generator=generator)
            loss = 1 - F.cosine_similarity(self.head(train_x[idx]), train_cls[idx] - self.cls_mean).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        self.head.eval()

    @torch.no_grad()
    def score(self, tokens: Tensor, cls: Tensor) -> dict[str, float]:
        """(n, T, C) tokens and (n, C) CLS → mean centred and raw cosine of the predicted CLS."""
        pred = torch.cat([self.head(tokens[part]) for part in chunks(tokens.shape[0], 64)])
        centered = F.cosine_similarity(pred, cls - self.cls_mean).mean()
        raw = F.cosine_similarity(pred + self.cls_mean, cls).mean()
        return {"centered_cosine": float(centered), "cosine": float(raw)}
