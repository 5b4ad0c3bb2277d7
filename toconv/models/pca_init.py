"""Data-driven initialisation: the moment-matched, pooling-aligned PCA code of each receptive field.

For full receptive fields with flattened tokens r ∈ R^{k²C}, the compressor is set to

    z = μ_x + Σ_x^{1/2} · Q · D^{-1/2} · Pᵀ (r − μ_r)

* P (k²C × C), D: the top-C principal directions and variances of r, the linear code that keeps
  the most of the RF (largest share of variance a linear decoder can rebuild);
* D^{-1/2} then Σ_x^{1/2}: whiten, then colour with the covariance of real tokens x, so the
  compressed tokens have the mean and covariance of real ones (what a frozen reader expects);
* Q: the rotation (orthogonal Procrustes) that brings these tokens closest to average pooling of
  the same RF, so each compressed token also *means* what a pooled token means.

Pooling means the average-pooling cell of the output token: the s×s grid cell (s = input side /
output side), which is the whole window at 24→8 and 24→6 and the 2×2 cell inside the 3×3 window
at 24→12.

With ``pin_pooling=p`` the top-p principal directions of real tokens carry average pooling of the
cell exactly (what a frozen reader of real tokens reads best), and the other C − p directions carry
the moment-matched PCA code of what pooling leaves out of the RF:

    z = U Uᵀ cell(r) + V (Vᵀ μ_x + Λ^{1/2} · Q · D_e^{-1/2} · P_eᵀ e(r))

with U (C × p) and V, Λ the top and the remaining principal directions and variances of x, cell(r)
the mean of the cell's tokens, e(r) the RF minus its least-squares prediction from the pinned part,
and P_e, D_e its top C − p principal directions and variances (Q again the Procrustes rotation
towards pooling). p = C is average pooling of the cell. U is held on the compressor
(:meth:`TokenCompressor.pin_`): the partial convolution leaves that part unrenormalised where
it rescales a window clipped by the grid border (24→12 only), so the pinned part is the cell mean
in every window. With ``pin_token="center"`` the window's centre token takes the place of
cell(r) (p = C is then keep-center): a frozen reader of real tokens reads a real token better
than a mean. ``pin_token="blend"`` holds half the centre token plus half the cell mean, a
centre-weighted cell mean (the start the default recipe uses): the mean's vote over the cell,
pulled towards a token that looks real.

Training then refines this starting point with the critic and the decoder.
"""

from __future__ import annotations

import torch
from einops import einsum, rearrange
from torch import Tensor

from toconv.geometry import ConvGeometry, RFGeometry, gather_rf_tokens
from toconv.models.partial_conv import TokenCompressor


def _sym_power(cov: Tensor, power: float, eps: float = 1e-6) -> Tensor:
    """Σ^power for a symmetric positive semi-definite (C, C) matrix."""
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag(values.clamp_min(eps) ** power) @ vectors.T


def _top_components(centred: Tensor, count: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Top ``count`` principal directions (D, count) and standard deviations (count,) of (n, D)
    centred rows, by a randomised low-rank SVD seeded from ``generator`` (the global random state
    is left untouched)."""
    svd_seed = int(torch.randint(2**62, (1,), generator=generator))
    devices = [centred.device] if centred.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # svd_lowrank draws from the global generator
        torch.manual_seed(svd_seed)
        _, s, v = torch.svd_lowrank(centred, q=min(count + 16, centred.shape[1]), niter=3)
    return v[:, :count], s[:count] / (len(centred) - 1) ** 0.5


def _procrustes(target: Tensor, scores: Tensor) -> Tensor:
    """The rotation Q maximising tr(Qᵀ E[target · scoresᵀ]) for (n, d) rows of both."""
    u, _, vh = torch.linalg.svd(target.T @ scores)
    return u @ vh


def cell_weights(geometry: ConvGeometry) -> Tensor:
    """(k²,) weights of the window's slots (row-major) that average the output token's grid cell:
    1/s² on the s×s cell's slots, 0 elsewhere. ``ValueError`` where the cell does not sit at the
    same slots of every window (s not an integer, stride ≠ s, or the cell outside the window).
    The cells are those of :func:`toconv.metrics.cell_geometry` (not imported: inference code
    stays free of the metrics)."""
    g = geometry
    s = g.input_grid_size // g.output_grid_size
    if s * g.output_grid_size != g.input_grid_size:
        raise ValueError(f"grid cells need an output side that divides the input side, got "
                         f"{g.input_grid_size} -> {g.output_grid_size}")
    if g.stride != s or g.padding + s > g.kernel_size:
        raise ValueError(f"{g.name}: the {s}x{s} grid cell must sit at the same slots of every "
                         f"{g.kernel_size}x{g.kernel_size} window: expected stride {s} and padding "
                         f"<= {g.kernel_size - s}, got stride {g.stride}, padding {g.padding}")
    inside = (torch.arange(g.kernel_size) >= g.padding) & (torch.arange(g.kernel_size) < g.padding + s)
    return rearrange(inside[:, None] & inside[None, :], "dy dx -> (dy dx)").float() / s**2


def _pca_weight(centred: Tensor, pooled: Tensor, cov_x: Tensor, generator: torch.Generator | None) -> Tensor:
    """(C, k²C) map of the moment-matched, pooling-aligned PCA code of centred (n, k²C) RFs."""
    c = cov_x.shape[0]
    directions, std = _top_components(centred, c, generator)  # (k²C, C), (C,)
    scores = centred @ directions / std  # whitened code, (n, C)
    rotation = _procrustes(pooled @ _sym_power(cov_x, -0.5), scores)
    return _sym_power(cov_x, 0.5) @ rotation @ torch.diag(1 / std) @ directions.T


def _pinned_weight(centred: Tensor, pooled: Tensor, cov_x: Tensor, cell: Tensor, pinned: int,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """(C, k²C) map: average pooling of the cell (``cell``: (k²,) slot weights) in the
    top-``pinned`` principal directions of real tokens, the moment-matched PCA code of the RF's
    residual in the others (module docstring); and those directions, (C, pinned)."""
    c = cov_x.shape[0]
    values, vectors = torch.linalg.eigh(cov_x)  # ascending
    top, rest = vectors[:, c - pinned:], vectors[:, : c - pinned]
    pool_top = rearrange(einsum(cell, top, "r, c p -> p r c"), "p r c -> p (r c)")  # Uᵀ · cell mean
    if pinned == c:
        return top @ pool_top, top
    rest_var = values[: c - pinned].clamp_min(1e-6)
    kept = centred @ pool_top.T  # (n, p)
    explained = torch.linalg.lstsq(kept, centred).solution  # (p, k²C)
    directions, std = _top_components(centred - kept @ explained, c - pinned, generator)
    # the code of e(r) = r − explainedᵀ·pool_top·r, as one map of the RF: (C − p, k²C)
    residual_code = (directions.T - (directions.T @ explained.T) @ pool_top) / std[:, None]
    rotation = _procrustes(pooled @ rest / rest_var.sqrt(), centred @ residual_code.T)
    return top @ pool_top + rest @ torch.diag(rest_var.sqrt()) @ rotation @ residual_code, top


PIN_TOKENS = ("mean", "center", "blend")
"""What a pinned start holds in its pinned directions: the grid cell's ``mean`` (average pooling),
the window's ``center`` token (keep-center) or their average, ``blend``."""


def pinned_token_weights(geometry: ConvGeometry, token: str) -> Tensor:
    """(k²,) slot weights of what the pinned directions hold: :func:`cell_weights` for ``mean``,
    1 on the window's centre slot (k//2, k//2; a slot every window holds, also at 24→12's border)
    for ``center``, the average of the two for ``blend``."""
    if token == "mean":
        return cell_weights(geometry)
    if token == "blend":
        return (cell_weights(geometry) + pinned_token_weights(geometry, "center")) / 2
    if token != "center":
        raise ValueError(f"pin_token: expected one of {', '.join(PIN_TOKENS)}, got {token!r}")
    rf = RFGeometry.from_conv(geometry)
    outside = int((~rf.mask[:, rf.center_slot]).sum())
    if outside:
        raise ValueError(f"{geometry.name}: pin_token='center' needs the window's centre slot inside "
                         f"the grid in every window, got {outside} windows where it is padding")
    weights = torch.zeros(geometry.kernel_size**2)
    weights[rf.center_slot] = 1.0
    return weights


@torch.no_grad()
def pca_init_(compressor: TokenCompressor, tokens: Tensor, max_samples: int = 16384,
              generator: torch.Generator | None = None, pin_pooling: int = 0,
              pin_token: str = "mean") -> TokenCompressor:
    """Set ``compressor`` in place to the moment-matched, pooling-aligned PCA code of its RFs.

    Args:
        compressor: a compressor with ``out_dim == hidden_dim`` (tokens stay in the encoder's space).
        tokens: (B, N, C) original patch tokens from the training split.
        max_samples: full receptive fields used for the fit (randomly drawn when there are more).
        generator: CPU generator for that draw and for the randomised low-rank SVD (the global
            random state is left untouched, so the result depends only on the data and it).
        pin_pooling: top principal directions of real tokens that keep average pooling of the
            grid cell exactly (0: none, the plain PCA code; C: average pooling). Their (C, p)
            basis is held on the compressor (:attr:`TokenCompressor.pinned_directions`, saved
            with it), so training can hold that part fixed.
        pin_token: what those directions hold: the cell's ``mean``, the window's ``center``
            token or their average, ``blend`` (:func:`pinned_token_weights`); the residual code
            is then of what it leaves out.
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
    if not 0 <= pin_pooling <= cfg.hidden_dim:
        raise ValueError(f"pin_pooling: expected 0 to {cfg.hidden_dim} pinned directions, got {pin_pooling}")
    rf, c, k = compressor.rf, cfg.hidden_dim, compressor.geometry.kernel_size
    # the slots the pinned part reads (the grid cell or the centre), else the whole window
    slots = (pinned_token_weights(compressor.geometry, pin_token) if pin_pooling
             else torch.full((k * k,), 1 / k**2)).to(tokens.device)
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
    flat = rearrange(x, "b n c -> (b n) c")
    mu_x, cov_x = flat.mean(dim=0), torch.cov(flat.T)
    pooled = einsum(windows, slots, "n r c, r -> n c") - mu_x  # centred pooled tokens
    top = None
    if pin_pooling:
        weight, top = _pinned_weight(r - mu_r, pooled, cov_x, slots, pin_pooling, generator)
    else:
        weight = _pca_weight(r - mu_r, pooled, cov_x, generator)

    conv = compressor.conv
    conv.weight.copy_(rearrange(weight, "o (dy dx c) -> o c dy dx", dy=k, dx=k))
    if conv.bias is not None:
        bias = mu_x - weight @ mu_r
        conv.bias.copy_(bias if top is None else bias - top @ (top.T @ bias))  # no offset where pinned
    compressor.pin_(top)
    return compressor


def init_compressor(tokens: Tensor, output_grid_size: int, init: str = "pca", seed: int = 0,
                    pin_pooling: int = 0, pin_token: str = "mean") -> TokenCompressor:
    """The untrained compressor for (B, N, C) training tokens: ``pca`` (:func:`pca_init_`, fitted on
    ``tokens`` with a generator seeded by ``seed``, min(``pin_pooling``, C) directions holding
    ``pin_token`` (:func:`pinned_token_weights`), so one setting serves every token width),
    ``avg`` (average pooling of each window) or ``random``."""
    if init not in ("pca", "avg", "random"):
        raise ValueError(f"init must be 'pca', 'avg' or 'random', got {init!r}")
    _, n, dim = tokens.shape
    side = round(n**0.5)
    if side * side != n:
        raise ValueError(f"expected tokens of a square grid, got N={n}")
    compressor = TokenCompressor(side, output_grid_size, hidden_dim=dim,
                                 init="avg" if init == "pca" else init)
    if init == "pca":
        pca_init_(compressor, tokens, generator=torch.Generator().manual_seed(seed),
                  pin_pooling=min(pin_pooling, dim), pin_token=pin_token)
    return compressor
