"""What a compressed token keeps of its receptive field: probes that rebuild the RF from it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor

from toconv.geometry import RFGeometry
from toconv.metrics.settings import ProbeSettings, chunks
from toconv.objective.decoders import RFConvDecoder


def _masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over valid slots: pred/target (..., R, C), mask (..., R) bool."""
    err = (pred - target).pow(2).sum(-1) * mask
    return err.sum() / (mask.sum() * pred.shape[-1])


def _spd_solve(a: Tensor, b: Tensor) -> Tensor:
    """Solve batched symmetric positive definite systems ``a x = b`` by Cholesky (no pivoting,
    which some CPU LAPACK builds reject for batched float64 LU); least squares if not definite."""
    factor, info = torch.linalg.cholesky_ex(a)
    if int(info.max()) == 0:
        return torch.cholesky_solve(b, factor)
    return torch.linalg.lstsq(a, b).solution


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
        for part in chunks(val_z.shape[0], 16):
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
