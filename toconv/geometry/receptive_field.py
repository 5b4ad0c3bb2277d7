"""Receptive fields of every output token: the single source of RF geometry for toconv."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import Tensor

from toconv.geometry.conv import ConvGeometry


@dataclass(frozen=True, eq=False)
class RFGeometry:
    """Which input tokens each output token sees.

    Slots follow the ``k×k`` window row-major, so slot ``r = dy * k + dx`` means the same relative
    position for every RF; windows clipped by the grid border have invalid slots.

    Attributes:
        conv: the convolution geometry the RFs derive from.
        indices: (M, R) long, flat row-major input index per slot (0 where invalid), R = k².
        mask: (M, R) bool, True where the slot lies inside the grid.
        compact: (M, R) long, the valid indices of each RF first (for uniform sampling).
    """

    conv: ConvGeometry
    indices: Tensor
    mask: Tensor
    compact: Tensor

    @classmethod
    def from_conv(cls, conv: ConvGeometry) -> RFGeometry:
        k, n = conv.kernel_size, conv.input_grid_size
        starts = torch.arange(conv.output_grid_size) * conv.stride - conv.padding
        pos = rearrange(starts, "o -> o 1") + torch.arange(k)  # (out, k) positions along one axis
        inside = (pos >= 0) & (pos < n)
        pos = pos.clamp(0, n - 1)
        rows = rearrange(pos, "i dy -> i 1 dy 1")
        cols = rearrange(pos, "j dx -> 1 j 1 dx")
        indices = rearrange(rows * n + cols, "i j dy dx -> (i j) (dy dx)")
        mask = rearrange(
            rearrange(inside, "i dy -> i 1 dy 1") & rearrange(inside, "j dx -> 1 j 1 dx"),
            "i j dy dx -> (i j) (dy dx)",
        )
        order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
        compact = indices.gather(1, order)
        return cls(conv, torch.where(mask, indices, torch.zeros_like(indices)), mask, compact)

    @property
    def center_slot(self) -> int:
        """The window's centre slot, (k//2, k//2) row-major (for even k, the lower-right of the
        central four)."""
        k = self.conv.kernel_size
        return (k // 2) * k + k // 2

    @property
    def num_outputs(self) -> int:
        """M, the number of output tokens (RFs)."""
        return self.indices.shape[0]

    @property
    def max_size(self) -> int:
        """R, the slot count of every RF (the full ``k×k`` window)."""
        return self.indices.shape[1]

    @property
    def sizes(self) -> Tensor:
        """(M,) long, number of valid input tokens per RF."""
        return self.mask.sum(dim=1)

    def coverage(self) -> Tensor:
        """(N,) long, how many RFs contain each input token."""
        return torch.bincount(self.indices[self.mask], minlength=self.conv.num_inputs)


def gather_rf_tokens(x: Tensor, rf: RFGeometry) -> Tensor:
    """Original tokens of every RF.

    Args:
        x: (B, N, C) tokens of the input grid, row-major.
    Returns:
        (B, M, R, C); invalid slots (``~rf.mask``) are zero.
    """
    idx = rf.indices.to(x.device)
    out = x[:, idx]  # (B, M, R, C)
    return out * rearrange(rf.mask.to(device=x.device, dtype=x.dtype), "m r -> 1 m r 1")


def sample_rf_tokens(x: Tensor, rf: RFGeometry, generator: torch.Generator | None = None) -> Tensor:
    """One uniformly random valid original token from each RF, drawn independently per image.

    Args:
        x: (B, N, C) tokens of the input grid.
        generator: optional generator on ``x.device`` for reproducible draws.
    Returns:
        (B, M, C).
    """
    b = x.shape[0]
    sizes = rf.sizes.to(x.device)
    u = torch.rand(b, rf.num_outputs, generator=generator, device=x.device)
    slot = (u * sizes).long().clamp_max(sizes - 1)  # (B, M) rank among the valid slots
    compact = repeat(rf.compact.to(x.device), "m r -> b m r", b=b)
    idx = compact.gather(2, rearrange(slot, "b m -> b m 1"))
    return x.gather(1, repeat(idx, "b m 1 -> b m c", c=x.shape[-1]))
