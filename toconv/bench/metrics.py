"""What a compressed token set keeps (information), how real it looks (distribution match) and
whether a model trained on uncompressed tokens can read it (plug-in proxy)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from toconv.bench.config import ProbeSettings
from toconv.geometry import RFGeometry
from toconv.models import RFConvDecoder


def _masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over valid slots: pred/target (..., R, C), mask (..., R) bool."""
    err = (pred - target).pow(2).sum(-1) * mask
    return err.sum() / (mask.sum() * pred.shape[-1])


def _chunks(num: int, size: int):
    return (slice(i, min(i + size, num)) for i in range(0, num, size))


def information_kept(train_z: Tensor, train_x: Tensor, val_z: Tensor, val_x: Tensor,
                     rf: RFGeometry, settings: ProbeSettings, seed: int = 0) -> dict[str, float]:
    """Train a fresh RF decoder on (compressed, RF tokens) pairs of the train split; score val.

    Args:
        train_z / val_z: (n, M, C) compressed tokens aligned with the RFs (token m ↔ RF m).
        train_x / val_x: (n, N, C) original tokens.
    Returns:
        ``r2``: 1 − SSE/SST over valid RF slots, SST around the mean val original token;
        ``centered_cosine``: mean cosine of prediction and target after subtracting the mean train
        token from both; ``cosine``: raw mean cosine; ``decoder_params``.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    n, m, dim = train_z.shape
    decoder = RFConvDecoder(dim, rf.conv, settings.decoder_layers, settings.decoder_hidden_dim)
    opt = torch.optim.Adam(decoder.parameters(), settings.decoder_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.decoder_steps)
    for _ in range(settings.decoder_steps):
        img = torch.randint(n, (settings.decoder_batch_tokens,), generator=generator)
        pos = torch.randint(m, (settings.decoder_batch_tokens,), generator=generator)
        z = train_z[img, pos]  # (T, C)
        target = train_x[img[:, None], rf.indices[pos]]  # (T, R, C)
        pred = decoder(rearrange(z, "t c -> 1 t c"))[0]
        loss = _masked_mse(pred, target, rf.mask[pos])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    decoder.eval()
    val_mean, train_mean = val_x.mean(dim=(0, 1)), train_x.mean(dim=(0, 1))
    sse = sst = cos_sum = ccos_sum = 0.0
    count = 0
    mask = rf.mask
    with torch.no_grad():
        for part in _chunks(val_z.shape[0], 16):
            pred = decoder(val_z[part])  # (b, M, R, C)
            target = val_x[part][:, rf.indices]
            sse += float(((pred - target).pow(2).sum(-1) * mask).sum())
            sst += float(((target - val_mean).pow(2).sum(-1) * mask).sum())
            cos_sum += float((F.cosine_similarity(pred, target, dim=-1) * mask).sum())
            ccos = F.cosine_similarity(pred - train_mean, target - train_mean, dim=-1)
            ccos_sum += float((ccos * mask).sum())
            count += int(mask.sum()) * pred.shape[0]
    return {"r2": 1.0 - sse / sst, "centered_cosine": ccos_sum / count, "cosine": cos_sum / count,
            "decoder_params": sum(p.numel() for p in decoder.parameters())}


def linear_information(train_z: Tensor, train_x: Tensor, val_z: Tensor, val_x: Tensor,
                       rf: RFGeometry, ridge: float = 1e-3, chunk: int = 64) -> dict[str, float]:
    """Closed-form linear RF decoder: the ridge regression of every RF slot on its compressed token.

    One affine map per slot r, shared by all RFs (like :class:`RFConvDecoder`), fitted on the train
    split over the RFs where slot r is valid; no optimiser, so no training budget favours a method.

    Args:
        train_z / val_z: (n, M, C) compressed tokens aligned with the RFs (token m ↔ RF m).
        train_x / val_x: (n, N, C) original tokens.
        ridge: penalty as a fraction of the mean diagonal of the Gram matrix.
    Returns:
        ``r2`` (1 − SSE/SST over valid val slots, SST around the mean val original token) and
        ``centered_cosine`` (prediction and target minus the mean train token).
    """
    for name, z, x in (("train", train_z, train_x), ("val", val_z, val_x)):
        if z.shape[1] != rf.num_outputs or x.shape[1] != rf.conv.num_inputs or z.shape[2] != x.shape[2]:
            raise ValueError(f"expected {name} tokens (n, {rf.num_outputs}, C) compressed and "
                             f"(n, {rf.conv.num_inputs}, C) original, got {tuple(z.shape)} and "
                             f"{tuple(x.shape)}")
    mask = rf.mask.double()  # (M, R)
    dim = train_z.shape[-1]

    def design(z: Tensor) -> Tensor:
        return torch.cat([z.double(), z.new_ones(*z.shape[:-1], 1, dtype=torch.float64)], dim=-1)

    gram = cross = 0.0
    for part in _chunks(train_z.shape[0], chunk):
        z = design(train_z[part])  # (b, M, C+1)
        target = train_x[part][:, rf.indices].double()  # (b, M, R, C)
        gram = gram + einsum(z, mask, z, "b m i, m r, b m j -> r i j")
        cross = cross + einsum(z, mask, target, "b m i, m r, b m r c -> r i c")
    eye = torch.eye(dim + 1, dtype=torch.float64)
    penalty = ridge * torch.diagonal(gram, dim1=-2, dim2=-1).mean(-1)[:, None, None]
    weight = torch.linalg.solve(gram + penalty * eye, cross)  # (R, C+1, C)

    val_mean, train_mean = val_x.mean(dim=(0, 1)).double(), train_x.mean(dim=(0, 1)).double()
    sse = sst = ccos_sum = 0.0
    for part in _chunks(val_z.shape[0], chunk):
        pred = einsum(design(val_z[part]), weight, "b m i, r i c -> b m r c")
        target = val_x[part][:, rf.indices].double()
        sse += float(((pred - target).pow(2).sum(-1) * mask).sum())
        sst += float(((target - val_mean).pow(2).sum(-1) * mask).sum())
        ccos = F.cosine_similarity(pred - train_mean, target - train_mean, dim=-1)
        ccos_sum += float((ccos * mask).sum())
    count = float(mask.sum()) * val_z.shape[0]
    return {"r2": 1.0 - sse / sst, "centered_cosine": ccos_sum / count}


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two samples (S, C), in float64.

    ‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa^½ Σb Σa^½)^½.
    """
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def sliced_wasserstein(a: Tensor, b: Tensor, projections: Tensor) -> float:
    """Sliced 2-Wasserstein distance of two equal-size samples (S, C) over unit ``projections``
    (P, C): sqrt of the mean over projections of the 1-D W2² between sorted projected samples."""
    if a.shape != b.shape:
        raise ValueError(f"expected two samples of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    pa = torch.sort(a.double() @ projections.double().T, dim=0).values
    pb = torch.sort(b.double() @ projections.double().T, dim=0).values
    return float((pa - pb).pow(2).mean().sqrt())


def sample_rows(x: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` rows drawn without replacement from (n, T, C) tokens flattened to (n·T, C)."""
    flat = rearrange(x, "n t c -> (n t) c")
    if count > flat.shape[0]:
        raise ValueError(f"expected at least {count} tokens to sample from, got {flat.shape[0]}")
    return flat[torch.randperm(flat.shape[0], generator=generator)[:count]]


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
        pred = torch.cat([self.head(tokens[part]) for part in _chunks(tokens.shape[0], 64)])
        centered = F.cosine_similarity(pred, cls - self.cls_mean).mean()
        raw = F.cosine_similarity(pred + self.cls_mean, cls).mean()
        return {"centered_cosine": float(centered), "cosine": float(raw)}
