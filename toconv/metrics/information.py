"""What compressed tokens keep of the original grid: a closed-form probe that rebuilds it, and its
ceiling (the best linear code of each grid cell)."""

from __future__ import annotations

import torch
from einops import einsum, rearrange, repeat
from torch import Tensor

from toconv.metrics.grid import cell_tokens
from toconv.metrics.settings import chunks


def _spd_solve(a: Tensor, b: Tensor) -> Tensor:
    """Solve batched symmetric positive definite systems ``a x = b`` by Cholesky (no pivoting,
    which some CPU LAPACK builds reject for batched float64 LU); least squares if not definite."""
    factor, info = torch.linalg.cholesky_ex(a)
    if int(info.max()) == 0:
        return torch.cholesky_solve(b, factor)
    return torch.linalg.lstsq(a, b).solution


def covering_tokens(z: Tensor, assignments: Tensor) -> Tensor:
    """(n, M, C) compressed tokens and the (n, N) or (N,) index of the one covering each original
    token → (n, N, C): every original position with its covering token."""
    a = assignments.expand(z.shape[0], -1).to(z.device)
    return z.gather(1, repeat(a, "n t -> n t c", c=z.shape[-1]))


def _design(z: Tensor, output_grid_size: int) -> Tensor:
    """(b, N, C) covering tokens → (s², b·M, C+1): per cell slot, every cell's token and a 1."""
    z = rearrange(cell_tokens(z.double(), output_grid_size), "b m s c -> s (b m) c")
    return torch.cat([z, z.new_ones(*z.shape[:-1], 1)], dim=-1)


def _targets(x: Tensor, output_grid_size: int) -> Tensor:
    return rearrange(cell_tokens(x.double(), output_grid_size), "b m s c -> s (b m) c")


def fit_slot_maps(train_cover: Tensor, train_x: Tensor, output_grid_size: int, ridge: float = 1e-3,
                  chunk: int = 64) -> Tensor:
    """One closed-form ridge map ``[z, 1] → x`` per slot of the grid cell, fitted on (n, N, C)
    covering tokens and originals: (s², C+1, C) float64."""
    gram = cross = 0.0
    for part in chunks(train_cover.shape[0], chunk):
        z = _design(train_cover[part], output_grid_size)
        gram = gram + einsum(z, z, "s t i, s t j -> s i j")
        cross = cross + einsum(z, _targets(train_x[part], output_grid_size), "s t i, s t c -> s i c")
    eye = torch.eye(gram.shape[-1], dtype=torch.float64)
    penalty = ridge * torch.diagonal(gram, dim1=-2, dim2=-1).mean(-1)[:, None, None]
    return _spd_solve(gram + penalty * eye, cross)


def _predict(cover: Tensor, maps: Tensor, output_grid_size: int) -> Tensor:
    """(b, N, C) covering tokens → (s², b·M, C) float64 originals rebuilt by ``maps``, cell-slot major."""
    return einsum(_design(cover, output_grid_size), maps, "s t i, s i c -> s t c")


def decode_cells(cover: Tensor, maps: Tensor, output_grid_size: int) -> Tensor:
    """(n, N, C) covering tokens → (n, N, C) float32 originals rebuilt by :func:`fit_slot_maps`'
    ``maps``, in the originals' row-major order."""
    side = round(cover.shape[1] ** 0.5) // output_grid_size
    return rearrange(_predict(cover, maps, output_grid_size).float(), "(p q) (b i j) c -> b (i p j q) c",
                     p=side, q=side, i=output_grid_size, j=output_grid_size)


def information_per_image(train_cover: Tensor, train_x: Tensor, val_cover: Tensor, val_x: Tensor,
                          output_grid_size: int, ridge: float = 1e-3, chunk: int = 64) -> dict[str, Tensor]:
    """The information probe: every original token rebuilt from the compressed token that covers it
    (:func:`covering_tokens`), one closed-form ridge map ``[z, 1] → x`` per slot of the grid
    cell (the average-pooling window, ``output_grid_size`` per side), fitted on the train split
    (:func:`fit_slot_maps`).

    For a grid method the covering token of a cell's originals is the cell's own token; for a
    method without a grid (ToMe, slots) it is the token the original was merged into. Every method
    gets the same targets and the same s² maps (no training budget, nothing that assumes pooling).

    Args:
        train_cover / val_cover: (n, N, C) covering tokens; train_x / val_x: (n, N, C) originals.
    Returns:
        per val image (n,) float64 ``sse`` and ``sst`` (around the mean val token);
        R² = 1 − Σ sse / Σ sst over any set of images.
    """
    for name, z, x in (("train", train_cover, train_x), ("val", val_cover, val_x)):
        if z.shape != x.shape:
            raise ValueError(f"expected {name} covering tokens shaped like the originals "
                             f"(n, N, C), got {tuple(z.shape)} and {tuple(x.shape)}")
    weight = fit_slot_maps(train_cover, train_x, output_grid_size, ridge, chunk)
    val_mean = val_x.mean(dim=(0, 1)).double()
    sse, sst = [], []
    for part in chunks(val_cover.shape[0], chunk):
        b = val_cover[part].shape[0]
        pred = _predict(val_cover[part], weight, output_grid_size)
        target = _targets(val_x[part], output_grid_size)
        sse.append(reduce_images((pred - target).pow(2), b))
        sst.append(reduce_images((target - val_mean).pow(2), b))
    return {"sse": torch.cat(sse).cpu(), "sst": torch.cat(sst).cpu()}


def reduce_images(values: Tensor, num_images: int) -> Tensor:
    """(s², b·M, C) squared errors → (b,) sums per image."""
    return rearrange(values, "s (b m) c -> b (s m c)", b=num_images).sum(1)


@torch.no_grad()
def cell_pca_codes(train_x: Tensor, val_x: Tensor, output_grid_size: int,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The best linear code of each grid cell: the top-C principal components of the flattened
    cell tokens (s²C) fitted on ``train_x``, as (n, M, C) codes of both splits (the ceiling the
    information probe is read against)."""
    dim = train_x.shape[-1]
    flat_train = rearrange(cell_tokens(train_x.float(), output_grid_size), "n m s c -> (n m) (s c)")
    mean = flat_train.mean(0)
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):  # svd_lowrank draws from the global generator
        torch.manual_seed(seed)
        _, _, v = torch.svd_lowrank(flat_train - mean, q=min(dim + 16, flat_train.shape[1]), niter=3)
    directions = v[:, :dim]

    def code(x: Tensor) -> Tensor:
        cells = rearrange(cell_tokens(x.float(), output_grid_size), "n m s c -> n m (s c)")
        return (cells - mean) @ directions

    return code(train_x), code(val_x)
