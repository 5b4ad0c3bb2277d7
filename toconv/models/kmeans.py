"""Batched k-means (Lloyd's algorithm): the start of slot attention and its codebooks, and the
baseline grouping the slots are compared with."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor


def _sq_distances(points: Tensor, centroids: Tensor) -> Tensor:
    """(B, P, K) squared Euclidean distances of (B, P, D) points to (B, K, D) centroids."""
    return (points.pow(2).sum(-1, keepdim=True) - 2 * points @ centroids.transpose(1, 2)
            + rearrange(centroids.pow(2).sum(-1), "b k -> b 1 k"))


def _plus_plus(x: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """(B, k, D) k-means++ centres of (B, P, D) points."""
    rows = torch.arange(x.shape[0], device=x.device)
    first = torch.randint(x.shape[1], (x.shape[0],), generator=generator).to(x.device)
    centroids = x[rows, first][:, None]
    nearest = _sq_distances(x, centroids)[..., 0]
    for _ in range(k - 1):
        pick = torch.multinomial(nearest.cpu().clamp_min(0) + 1e-12, 1, generator=generator)[:, 0].to(x.device)
        chosen = x[rows, pick][:, None]
        centroids = torch.cat([centroids, chosen], dim=1)
        nearest = torch.minimum(nearest, _sq_distances(x, chosen)[..., 0])
    return centroids


@torch.no_grad()
def kmeans(points: Tensor, k: int, iterations: int = 20, generator: torch.Generator | None = None,
           plus_plus: bool = False) -> tuple[Tensor, Tensor]:
    """k-means of each of B independent point sets, all at once.

    Starts from k distinct points drawn at random per set, or with ``plus_plus`` from k-means++
    (each next centre drawn in proportion to its squared distance from the chosen ones); a cluster
    that empties is moved to the point farthest from its centroid.

    Args:
        points: (B, P, D) with P ≥ k.
        generator: CPU generator for the start (the global random state is left untouched).
    Returns:
        centroids (B, k, D) and labels (B, P) long.
    """
    if points.ndim != 3:
        raise ValueError(f"expected points of shape (B, P, D), got {tuple(points.shape)}")
    b, p, _ = points.shape
    if not 1 <= k <= p:
        raise ValueError(f"k-means needs 1 <= k <= {p} (the points per set), got k={k}")
    x = points.float()
    centroids = _plus_plus(x, k, generator) if plus_plus else x.gather(
        1, rearrange(torch.rand(b, p, generator=generator).argsort(dim=1)[:, :k].to(x.device),
                     "b k -> b k 1").expand(-1, -1, x.shape[-1]))
    for _ in range(iterations):
        dist = _sq_distances(x, centroids)
        labels = dist.argmin(dim=-1)
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)  # (B, P, K)
        counts = onehot.sum(dim=1)  # (B, K)
        sums = onehot.transpose(1, 2) @ x
        farthest = dist.gather(2, rearrange(labels, "b p -> b p 1")).squeeze(-1).argmax(dim=1)
        refill = rearrange(x[torch.arange(b, device=x.device), farthest], "b d -> b 1 d")
        centroids = torch.where(rearrange(counts > 0, "b k -> b k 1"),
                                sums / rearrange(counts.clamp_min(1), "b k -> b k 1"), refill)
    return centroids, _sq_distances(x, centroids).argmin(dim=-1)
