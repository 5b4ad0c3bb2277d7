"""Data-driven initialisation: the moment-matched, pooling-aligned PCA code of each receptive field.

For full receptive fields with flattened tokens r ∈ R^{k²C}, the compressor is set to

    z = μ_x + Σ_x^{1/2} · Q · D^{-1/2} · Pᵀ (r − μ_r)

* P (k²C × C), D: the top-C principal directions and variances of r, the linear code that keeps
  the most of the RF (largest share of variance a linear decoder can rebuild);
* D^{-1/2} then Σ_x^{1/2}: whiten, then colour with the covariance of real tokens x, so the
  compressed tokens have the mean and covariance of real ones (what a frozen reader expects);
* Q: the rotation (orthogonal Procrustes) that brings these tokens closest to average pooling of
  the same RF, so each compressed token also *means* what a pooled token means.

Training then refines this starting point with the critic and the decoder.
"""

from __future__ import annotations

import torch
from einops import rearrange, reduce
from torch import Tensor

from toconv.geometry import gather_rf_tokens
from toconv.models.partial_conv import TokenCompressor


def _sym_power(cov: Tensor, power: float, eps: float = 1e-6) -> Tensor:
    """Σ^power for a symmetric positive semi-definite (C, C) matrix."""
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag(values.clamp_min(eps) ** power) @ vectors.T


@torch.no_grad()
def pca_init_(compressor: TokenCompressor, tokens: Tensor, max_samples: int = 16384,
              generator: torch.Generator | None = None) -> TokenCompressor:
    """Set ``compressor`` in place to the moment-matched, pooling-aligned PCA code of its RFs.

    Args:
        compressor: a compressor with ``out_dim == hidden_dim`` (tokens stay in the encoder's space).
        tokens: (B, N, C) original patch tokens from the training split.
        max_samples: full receptive fields used for the fit (randomly drawn when there are more).
        generator: CPU generator for that draw and for the randomised low-rank SVD (the global
            random state is left untouched, so the result depends only on the data and it).
    Returns:
        the same compressor.
    """
    cfg = compressor.config
    if cfg.output_dim != cfg.hidden_dim:
        raise ValueError(f"PCA init keeps tokens in the encoder's space: expected out_dim == "
                         f"hidden_dim={cfg.hidden_dim}, got out_dim={cfg.output_dim}")
    if tokens.ndim != 3 or tokens.shape[1:] != (compressor.num_input_tokens, cfg.hidden_dim):
        raise ValueError(f"expected tokens (B, {compressor.num_input_tokens}, {cfg.hidden_dim}), "
                         f"got {tuple(tokens.shape)}")
    rf, c, k = compressor.rf, cfg.hidden_dim, compressor.geometry.kernel_size
    x = tokens.float()
    full = rf.mask.all(dim=1).to(x.device)
    windows = rearrange(gather_rf_tokens(x, rf)[:, full], "b m r c -> (b m) r c")
    if len(windows) > max_samples:
        pick = torch.randperm(len(windows), generator=generator)[:max_samples]
        windows = windows[pick.to(x.device)]
    if len(windows) <= c:
        raise ValueError(f"PCA init needs more than {c} full receptive fields, got {len(windows)}: "
                         f"pass more images")
    r = rearrange(windows, "n r c -> n (r c)")
    mu_r = r.mean(dim=0)
    svd_seed = int(torch.randint(2**62, (1,), generator=generator))
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # svd_lowrank draws from the global generator
        torch.manual_seed(svd_seed)
        _, s, v = torch.svd_lowrank(r - mu_r, q=min(c + 16, r.shape[1]), niter=3)
    directions, std = v[:, :c], s[:c] / (len(r) - 1) ** 0.5  # (k²C, C), (C,)
    scores = (r - mu_r) @ directions / std  # whitened code, (n, C)

    flat = rearrange(x, "b n c -> (b n) c")
    mu_x, cov_x = flat.mean(dim=0), torch.cov(flat.T)
    pooled = reduce(windows, "n r c -> n c", "mean") - mu_x
    # orthogonal Procrustes in whitened coordinates: Q = argmax tr(Qᵀ E[Σ^{-1/2} a · scoresᵀ])
    u, _, vh = torch.linalg.svd((pooled @ _sym_power(cov_x, -0.5)).T @ scores)
    weight = _sym_power(cov_x, 0.5) @ (u @ vh) @ torch.diag(1 / std) @ directions.T  # (C, k²C)

    conv = compressor.conv
    conv.weight.copy_(rearrange(weight, "o (dy dx c) -> o c dy dx", dy=k, dx=k))
    if conv.bias is not None:
        conv.bias.copy_(mu_x - weight @ mu_r)
    return compressor


def init_compressor(tokens: Tensor, output_grid_size: int, init: str = "pca", seed: int = 0) -> TokenCompressor:
    """The untrained compressor for (B, N, C) training tokens: ``pca`` (:func:`pca_init_`, fitted on
    ``tokens`` with a generator seeded by ``seed``), ``avg`` (average pooling) or ``random``."""
    if init not in ("pca", "avg", "random"):
        raise ValueError(f"init must be 'pca', 'avg' or 'random', got {init!r}")
    _, n, dim = tokens.shape
    side = round(n**0.5)
    if side * side != n:
        raise ValueError(f"expected tokens of a square grid, got N={n}")
    compressor = TokenCompressor(side, output_grid_size, hidden_dim=dim,
                                 init="avg" if init == "pca" else init)
    if init == "pca":
        pca_init_(compressor, tokens, generator=torch.Generator().manual_seed(seed))
    return compressor
