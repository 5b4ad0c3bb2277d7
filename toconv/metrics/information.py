"""What compressed tokens keep of the original grid: closed-form probes that rebuild it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor

from toconv.geometry import RFGeometry
from toconv.metrics.grid import cell_tokens
from toconv.metrics.settings import chunks


def _spd_solve(a: Tensor, b: Tensor) -> Tensor:
    """Solve batched symmetric positive definite systems ``a x = b`` by Cholesky (no pivoting,
    which some CPU LAPACK builds reject for batched float64 LU); least squares if not definite."""
    factor, info = torch.linalg.cholesky_ex(a)
    if int(info.max()) == 0:
        return torch.cholesky_solve(b, factor)
    return torch.linalg.lstsq(a, b).solution


def information_kept(train_z: Tensor, train_x: Tensor, val_z: Tensor, val_x: Tensor,
                     ridge: float = 1e-3, chunk: int = 64) -> dict[str, float]:
    """The fair information probe: every original token rebuilt from the compressed token of its
    grid cell (:func:`~toconv.metrics.grid.cell_tokens`), the same target and capacity for every
    method.

    One closed-form ridge map per slot of the cell, ``[z, 1] → x``, fitted on the train split
    (solved exactly: no training budget, no skip, nothing that assumes pooled tokens).

    Args:
        train_z / val_z: (n, M, C) compressed tokens, token m describing cell m (row-major).
        train_x / val_x: (n, N, C) original tokens; √M must divide √N.
        ridge: penalty as a fraction of the mean diagonal of the Gram matrix.
    Returns:
        ``r2`` (1 − SSE/SST over every original val token, SST around the mean val token) and
        ``centered_cosine`` (prediction and target minus the mean train token).
    """
    out = round(train_z.shape[1] ** 0.5)
    for name, z, x in (("train", train_z, train_x), ("val", val_z, val_x)):
        if out * out != z.shape[1] or z.shape[0] != x.shape[0] or z.shape[2] != x.shape[2]:
            raise ValueError(f"expected {name} tokens (n, M, C) on a square grid and originals "
                             f"(n, N, C), got {tuple(z.shape)} and {tuple(x.shape)}")

    def design(z: Tensor) -> Tensor:
        z = rearrange(z.double(), "b m c -> (b m) c")
        return torch.cat([z, z.new_ones(z.shape[0], 1)], dim=-1)

    def targets(x: Tensor) -> Tensor:
        return rearrange(cell_tokens(x.double(), out), "b m s c -> (b m) (s c)")

    gram = cross = 0.0
    for part in chunks(train_z.shape[0], chunk):
        z = design(train_z[part])
        gram = gram + z.T @ z
        cross = cross + z.T @ targets(train_x[part])
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    weight = _spd_solve(gram + ridge * torch.diagonal(gram).mean() * eye, cross)  # (C+1, s²C)

    dim = train_x.shape[-1]
    val_mean, train_mean = val_x.mean(dim=(0, 1)).double(), train_x.mean(dim=(0, 1)).double()
    sse = sst = ccos_sum = 0.0
    for part in chunks(val_z.shape[0], chunk):
        pred = rearrange(design(val_z[part]) @ weight, "t (s c) -> t s c", c=dim)
        target = rearrange(targets(val_x[part]), "t (s c) -> t s c", c=dim)
        sse += float((pred - target).pow(2).sum())
        sst += float((target - val_mean).pow(2).sum())
        ccos_sum += float(F.cosine_similarity(pred - train_mean, target - train_mean, dim=-1).sum())
    count = val_x.shape[0] * val_x.shape[1]
    return {"r2": 1.0 - sse / sst, "centered_cosine": ccos_sum / count}


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
    for part in chunks(train_z.shape[0], chunk):
        z = design(train_z[part])  # (b, M, C+1)
        target = train_x[part][:, rf.indices].double()  # (b, M, R, C)
        gram = gram + einsum(z, mask, z, "b m i, m r, b m j -> r i j")
        cross = cross + einsum(z, mask, target, "b m i, m r, b m r c -> r i c")
    eye = torch.eye(dim + 1, dtype=torch.float64)
    penalty = ridge * torch.diagonal(gram, dim1=-2, dim2=-1).mean(-1)[:, None, None]
    weight = _spd_solve(gram + penalty * eye, cross)  # (R, C+1, C)

    val_mean, train_mean = val_x.mean(dim=(0, 1)).double(), train_x.mean(dim=(0, 1)).double()
    sse = sst = ccos_sum = 0.0
    for part in chunks(val_z.shape[0], chunk):
        pred = einsum(design(val_z[part]), weight, "b m i, r i c -> b m r c")
        target = val_x[part][:, rf.indices].double()
        sse += float(((pred - target).pow(2).sum(-1) * mask).sum())
        sst += float(((target - val_mean).pow(2).sum(-1) * mask).sum())
        ccos = F.cosine_similarity(pred - train_mean, target - train_mean, dim=-1)
        ccos_sum += float((ccos * mask).sum())
    count = float(mask.sum()) * val_z.shape[0]
    return {"r2": 1.0 - sse / sst, "centered_cosine": ccos_sum / count}
