"""What every vision-tower integration shares: the patch grid, the CLS pass-through, checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from toconv.models import TokenCompressor, load_compressor


def tower_grid_side(image_size: int, patch_size: int, expected: int | None = None,
                    name: str = "the vision tower") -> int:
    """Patch-grid side of a ViT tower, ``image_size // patch_size`` (the patch embedding drops a
    remainder, as transformers does: SigLIP at 384 px with 14 px patches gives 27).

    Raises ``ValueError`` naming both sides when ``expected`` is given and differs.
    """
    side = image_size // patch_size
    if expected is not None and side != expected:
        raise ValueError(f"the compressor expects a {expected}x{expected} patch grid, but {name} gives "
                         f"{side}x{side} (image_size={image_size}, patch_size={patch_size})")
    return side


def compress_patch_tokens(compressor: TokenCompressor, features: Tensor, has_cls: bool = False) -> Tensor:
    """Compress a tower's output: (B, [1+]N, C) → (B, [1+]M, C).

    With ``has_cls`` the leading CLS token passes through unchanged. The compressor computes in
    its own dtype; the result has the features' dtype and device.
    """
    grid = features[:, 1:] if has_cls else features
    out = compressor(grid)
    return torch.cat([features[:, :1], out], dim=1) if has_cls else out


def load_tower_compressor(path: str | Path, input_grid_size: int, output_grid_size: int,
                          hidden_dim: int, device: torch.device | str | None = None,
                          dtype: torch.dtype | None = None) -> TokenCompressor:
    """Load a toconv checkpoint of any family for a tower, checking its geometry and widths.

    The compressor must read ``hidden_dim``-wide tokens of an ``input_grid_size`` grid, give an
    ``output_grid_size`` grid and keep the width (the projector after it expects the tower's
    width). A mismatch raises ``ValueError`` naming the checkpoint and the tower.
    """
    compressor = load_compressor(path, input_grid_size=input_grid_size,
                                 output_grid_size=output_grid_size, hidden_dim=hidden_dim,
                                 cls_token=False)
    if compressor.config.output_dim != hidden_dim:
        raise ValueError(f"checkpoint {path} outputs {compressor.config.output_dim} channels, but the "
                         f"projector after the tower expects the tower width {hidden_dim}")
    return compressor.to(device=device, dtype=dtype)
