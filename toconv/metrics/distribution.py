"""How real compressed tokens look: sample distances to original tokens."""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor


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


def sample_per_image(x: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` rows per image, drawn without replacement: (n, T, C) → (n·count, C)."""
    n, t, c = x.shape
    if count > t:
        raise ValueError(f"expected at least {count} tokens per image to sample from, got {t}")
    idx = torch.rand(n, t, generator=generator).argsort(dim=1)[:, :count].to(x.device)
    return rearrange(x.gather(1, repeat(idx, "n k -> n k c", c=c)), "n k c -> (n k) c")

