"""Method-independent grid cells: the target region every method's token is scored against."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from toconv.geometry import ConvGeometry


def cell_geometry(input_grid_size: int, output_grid_size: int) -> ConvGeometry:
    """The non-overlapping cells of an ``output_grid_size`` grid over the input grid (the average
    pooling windows); ``ValueError`` where the output side does not divide the input side."""
    if input_grid_size % output_grid_size:
        raise ValueError(f"grid cells need an output side that divides the input side, got "
                         f"{input_grid_size} -> {output_grid_size}")
    side = input_grid_size // output_grid_size
    return ConvGeometry(input_grid_size, output_grid_size, side, side, 0)


def cell_tokens(x: Tensor, output_grid_size: int) -> Tensor:
    """Original tokens of every cell: (B, N, C) → (B, M, s², C), cells and slots row-major."""
    n = round(x.shape[1] ** 0.5)
    s = cell_geometry(n, output_grid_size).kernel_size
    return rearrange(x, "b (i p j q) c -> b (i j) (p q) c", p=s, q=s, i=output_grid_size)


def cell_assignments(input_grid_size: int, output_grid_size: int) -> Tensor:
    """(N,) long: the grid cell (row-major) of every original token, row-major."""
    side = cell_geometry(input_grid_size, output_grid_size).kernel_size
    cells = torch.arange(output_grid_size**2).reshape(output_grid_size, output_grid_size)
    return cells.repeat_interleave(side, 0).repeat_interleave(side, 1).flatten()
