"""Partial convolution over a fixed-size token grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from toconv.geometry import ConvGeometry, RFGeometry


class PartialConv2d(nn.Module):
    """2D convolution that renormalises each window by its share of valid (non-padding) inputs.

    Output ``y = conv(x) · k² / |valid window| + bias``, so border windows are not shrunk by the
    zero padding. The scale depends only on the geometry: it is computed once and kept as a
    (non-persistent) buffer.

    Shapes: (B, C_in, H, H) → (B, C_out, H', H') with H, H' from ``geometry``.
    """

    def __init__(self, in_channels: int, out_channels: int, geometry: ConvGeometry,
                 bias: bool = True) -> None:
        super().__init__()
        self.geometry = geometry
        k = geometry.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        sizes = RFGeometry.from_conv(geometry).sizes.float()
        scale = rearrange(k * k / sizes, "(i j) -> 1 1 i j", i=geometry.output_grid_size)
        self.register_buffer("scale", scale, persistent=False)
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

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
        y = y * self.scale.to(y.dtype)
        if self.bias is not None:
            y = y + rearrange(self.bias, "c -> 1 c 1 1")
        return y

    def extra_repr(self) -> str:
        g = self.geometry
        return (f"{self.weight.shape[1]}, {self.weight.shape[0]}, k={g.kernel_size}, "
                f"s={g.stride}, p={g.padding}")
