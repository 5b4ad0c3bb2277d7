"""Partial convolution over a fixed-size token grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from toconv.geometry import ConvGeometry, RFGeometry


class PartialConv2d(nn.Module):
    """2D convolution that renormalises each window by its share of valid (non-padding) inputs.

    Output ``y = conv(x) · k² / |valid window| + bias``, so border windows are not shrunk by the
    zero padding. The scale depends only on the geometry: it is computed once and kept as a
    (non-persistent) buffer.

    With ``unscaled_dim=p`` the layer holds p orthonormal output directions U (a persistent
    (C_out, p) buffer, ``unscaled_directions``, set by :meth:`set_unscaled_directions`) in which the
    output is not renormalised: ``y = s · conv(x) + (1 − s) · U Uᵀ conv(x) + bias``. A part of the
    code that reads only slots every window holds (a grid cell's mean) then stays exact at the border.

    Shapes: (B, C_in, H, H) → (B, C_out, H', H') with H, H' from ``geometry``.
    """

    def __init__(self, in_channels: int, out_channels: int, geometry: ConvGeometry,
                 bias: bool = True, unscaled_dim: int = 0) -> None:
        super().__init__()
        if not 0 <= unscaled_dim <= out_channels:
            raise ValueError(f"unscaled_dim: expected 0 to {out_channels} directions, got {unscaled_dim}")
        self.geometry = geometry
        k = geometry.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        sizes = RFGeometry.from_conv(geometry).sizes.float()
        scale = rearrange(k * k / sizes, "(i j) -> 1 1 i j", i=geometry.output_grid_size)
        self.register_buffer("scale", scale, persistent=False)
        # orthonormal placeholders; a checkpoint or set_unscaled_directions fills them
        self.register_buffer("unscaled_directions", torch.eye(out_channels, unscaled_dim) if unscaled_dim else None)
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def set_unscaled_directions(self, directions: Tensor | None) -> None:
        """Hold (C_out, p) orthonormal ``directions`` unscaled (``None``: renormalise everything)."""
        if directions is not None and (directions.ndim != 2 or directions.shape[0] != self.weight.shape[0]):
            raise ValueError(f"expected unscaled directions of shape ({self.weight.shape[0]}, p), got "
                             f"{tuple(directions.shape)}")
        held = None if directions is None else directions.detach().clone().to(self.weight.device)
        self.register_buffer("unscaled_directions", held)

    @torch.no_grad()
    def init_average_pooling(self) -> None:
        """Set the weights so the layer computes the mean of the valid tokens of each window."""
        out_ch, in_ch, k, _ = self.weight.shape
        if out_ch != in_ch:
            raise ValueError(f"average-pooling init needs equal in/out channels, got {in_ch}→{out_ch}")
        self.weight.zero_()
        idx = torch.arange(out_ch, device=self.weight.device)
        self.weight[idx, idx] = 1.0 / (k * k)
        if self.bias is not None:
            self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        g = self.geometry
        y = F.conv2d(x, self.weight, None, stride=g.stride, padding=g.padding)
        scale = self.scale.to(y.dtype)
        if self.unscaled_directions is not None:
            u = self.unscaled_directions.to(y.dtype)
            held = einsum(einsum(y, u, "b c h w, c p -> b p h w"), u, "b p h w, c p -> b c h w")
            y = y * scale + held * (1 - scale)
        else:
            y = y * scale
        if self.bias is not None:
            y = y + rearrange(self.bias, "c -> 1 c 1 1")
        return y

    def extra_repr(self) -> str:
        g = self.geometry
        unscaled = "" if self.unscaled_directions is None else f", unscaled={self.unscaled_directions.shape[1]}"
        return (f"{self.weight.shape[1]}, {self.weight.shape[0]}, k={g.kernel_size}, "
                f"s={g.stride}, p={g.padding}{unscaled}")
