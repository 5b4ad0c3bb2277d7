"""Decoders that rebuild original tokens from compressed ones (the information-keeping signal)."""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from toconv.geometry import ConvGeometry


def _check_heads(dim: int, num_heads: int) -> None:
    if dim % num_heads:
        raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")


class RFConvDecoder(nn.Module):
    """Convolutional upsampling of each compressed token to its ``k×k`` window.

    The token is a 1×1 map; a transposed convolution grows it to k×k, then ``num_layers - 2``
    3×3 convolutions and a 1×1 projection refine it. A skip connection adds the compressed token
    to every slot, so an untrained decoder starts from "the RF is its average".

    Shapes: (B, M, C_in) → (B, M, R, C) with R = k², slots row-major in the window.
    """

    def __init__(self, dim: int, geometry: ConvGeometry, num_layers: int = 3,
                 width: int | None = None, in_dim: int | None = None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        in_dim = in_dim or dim
        hidden = width or dim
        k = geometry.kernel_size
        self.kernel_size = k
        self.skip = in_dim == dim
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_dim, dim if num_layers == 1 else hidden, k)]
        for _ in range(num_layers - 2):
            layers += [nn.GELU(), nn.Conv2d(hidden, hidden, 3, padding=1)]
        if num_layers > 1:
            layers += [nn.GELU(), nn.Conv2d(hidden, dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        b = z.shape[0]
        y = self.net(rearrange(z, "b m c -> (b m) c 1 1"))
        y = rearrange(y, "(b m) c dy dx -> b m (dy dx) c", b=b)
        return y + z.unsqueeze(2) if self.skip else y


class RFAttentionDecoder(nn.Module):
    """Attention decoder: R learned slot queries attend to the compressed token and each other.

    Shapes: (B, M, C_in) → (B, M, R, C) with R = k².
    """

    def __init__(self, dim: int, geometry: ConvGeometry, num_layers: int = 2, num_heads: int = 8,
                 in_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        r = geometry.kernel_size**2
        self.proj_in = nn.Linear(in_dim or dim, dim)
        self.slots = nn.Parameter(torch.randn(r, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, num_heads, 4 * dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, z: Tensor) -> Tensor:
        b = z.shape[0]
        h = rearrange(self.proj_in(z), "b m c -> (b m) 1 c")
        queries = h + self.slots  # (BM, R, C)
        out = self.blocks(torch.cat([h, queries], dim=1))[:, 1:]
        out = self.proj_out(self.norm(out)) + h
        return rearrange(out, "(b m) r c -> b m r c", b=b)


class GlobalDecoder(nn.Module):
    """Rebuilds all N original tokens from the M compressed ones (the non-RF design).

    N learned position queries cross-attend to the compressed tokens (plus their own position
    embeddings). Shapes: (B, M, C_in) → (B, N, C).
    """

    def __init__(self, dim: int, geometry: ConvGeometry, num_layers: int = 2, num_heads: int = 8,
                 in_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        self.proj_in = nn.Linear(in_dim or dim, dim)
        self.memory_pos = nn.Parameter(torch.randn(geometry.num_outputs, dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(geometry.num_inputs, dim) * 0.02)
        layer = nn.TransformerDecoderLayer(dim, num_heads, 4 * dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerDecoder(layer, num_layers)
        self.norm = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, z: Tensor) -> Tensor:
        memory = self.proj_in(z) + self.memory_pos
        queries = repeat(self.queries, "n c -> b n c", b=z.shape[0])
        return self.proj_out(self.norm(self.blocks(queries, memory)))
