"""Per-receptive-field reconstruction quality."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from toconv.geometry import RFGeometry

#: Bucket name → half-open cosine interval [low, high).
BUCKETS: dict[str, tuple[float, float]] = {
    "excellent": (0.9, float("inf")),
    "good": (0.8, 0.9),
    "fair": (0.6, 0.8),
    "poor": (float("-inf"), 0.6),
}


def rf_cosines(pred: Tensor, target: Tensor, rf: RFGeometry) -> Tensor:
    """Mean cosine between rebuilt and original tokens over the valid slots of each RF.

    Args:
        pred, target: (B, M, R, C).
    Returns:
        (B, M) float32.
    """
    cos = F.cosine_similarity(pred.float(), target.float(), dim=-1)  # (B, M, R)
    mask = rf.mask.to(device=cos.device, dtype=cos.dtype)
    return (cos * mask).sum(-1) / mask.sum(-1)


@dataclass
class RFStats:
    """Quality map of the RFs of one output grid.

    Attributes:
        cos_map: (out, out) mean cosine per RF.
        buckets: number of RFs per quality bucket (see ``BUCKETS``).
        row_means, col_means: (out,) means of ``cos_map`` along rows / columns.
        mean_cosine: mean over all RFs.
    """

    cos_map: Tensor
    buckets: dict[str, int]
    row_means: Tensor
    col_means: Tensor
    mean_cosine: float

    @classmethod
    def from_rf_cosines(cls, per_rf: Tensor, output_grid_size: int) -> RFStats:
        """Build from (M,) per-RF cosines, or (B, M) which are averaged over B first."""
        per_rf = per_rf.detach().float().cpu()
        if per_rf.ndim == 2:
            per_rf = per_rf.mean(0)
        cos_map = rearrange(per_rf, "(i j) -> i j", i=output_grid_size)
        buckets = {name: int(((per_rf >= lo) & (per_rf < hi)).sum()) for name, (lo, hi) in BUCKETS.items()}
        return cls(cos_map, buckets, cos_map.mean(1), cos_map.mean(0), float(per_rf.mean()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_cosine": self.mean_cosine,
            "buckets": dict(self.buckets),
            "row_means": self.row_means.tolist(),
            "col_means": self.col_means.tolist(),
            "cos_map": self.cos_map.tolist(),
        }


@torch.no_grad()
def rf_statistics(pred: Tensor, target: Tensor, rf: RFGeometry) -> RFStats:
    """Per-RF statistics of a batch: pred/target (B, M, R, C) → :class:`RFStats`."""
    return RFStats.from_rf_cosines(rf_cosines(pred, target, rf), rf.conv.output_grid_size)
