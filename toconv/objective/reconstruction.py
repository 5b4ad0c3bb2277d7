"""Reconstruction objective: MSE + (1 − cosine) over valid RF slots."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor


class ReconstructionLoss(NamedTuple):
    total: Tensor
    """mse + (1 − cosine), the value to minimise."""
    mse: Tensor
    """mean squared error per element over valid slots."""
    cosine: Tensor
    """mean cosine similarity over valid slots."""


def reconstruction_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> ReconstructionLoss:
    """Compare rebuilt tokens with the originals.

    Args:
        pred, target: (B, M, R, C) for the RF design or (B, N, C) for the global one.
        mask: (M, R) bool validity of RF slots (``RFGeometry.mask``); None means all valid.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    mse = (pred - target).pow(2).mean(dim=-1)
    cos = F.cosine_similarity(pred, target, dim=-1)
    if mask is None:
        mse, cos = mse.mean(), cos.mean()
    else:
        weight = mask.to(device=pred.device, dtype=mse.dtype).expand_as(mse)
        denom = weight.sum()
        mse, cos = (mse * weight).sum() / denom, (cos * weight).sum() / denom
    return ReconstructionLoss(mse + (1 - cos), mse, cos)
