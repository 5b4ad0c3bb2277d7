"""Token sets the benchmark compresses: a feature cache (train/val) or generated smooth grids."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


@dataclass
class Features:
    """Patch tokens (n, N, C) and CLS tokens (n, C) of both splits, float32."""

    train: Tensor
    train_cls: Tensor
    val: Tensor
    val_cls: Tensor
    source: dict[str, Any] = field(default_factory=dict)

    def limited(self, max_train: int | None, max_val: int | None) -> Features:
        """The first ``max_train`` / ``max_val`` images of each split (all when ``None``)."""
        return Features(self.train[:max_train], self.train_cls[:max_train], self.val[:max_val],
                        self.val_cls[:max_val], {**self.source, "max_train": max_train, "max_val": max_val})


def load_cache(cache_dir: str | Path) -> Features:
    """Read ``cache_dir/train`` and ``cache_dir/val`` feature caches (see :mod:`toconv.data`)."""
    from toconv.data import FeatureCache

    root = Path(cache_dir)
    splits = {split: FeatureCache(root / split) for split in ("train", "val")}
    source = {"kind": "cache", "encoder": splits["train"].encoder_name,
              "images": {s: c.meta["key"]["source"] for s, c in splits.items()}}
    return Features(splits["train"].all_tokens(), splits["train"].all_cls(), splits["val"].all_tokens(),
                    splits["val"].all_cls(), source)


def build_cache(encoder_name: str, images: str | Path, out_dir: str | Path, seed: int = 0,
                val_fraction: float = 0.2) -> Features:
    """Encode ``images`` (train/val split with ``seed``) into ``out_dir/<split>``, then load it."""
    from toconv.data import ImageFolderDataset, build_feature_cache
    from toconv.encoders import build_encoder

    encoder = build_encoder(encoder_name, device="cpu")
    for split in ("train", "val"):
        dataset = ImageFolderDataset(images, split=split, val_fraction=val_fraction, seed=seed)
        build_feature_cache(encoder, dataset, Path(out_dir) / split)
    return load_cache(out_dir)


def synthetic_features(num_train: int, num_val: int, grid_size: int = 24, dim: int = 64,
                       seed: int = 0) -> Features:
    """Spatially smooth random token grids (bilinear upsampled 6×6 noise plus a little white noise
    and a shared mean token); the CLS token is a fixed linear map of the grid's mean token."""
    generator = torch.Generator().manual_seed(seed)
    n = num_train + num_val
    coarse = torch.randn(n, dim, 6, 6, generator=generator)
    smooth = F.interpolate(coarse, size=(grid_size, grid_size), mode="bilinear", align_corners=False)
    tokens = rearrange(smooth, "n c h w -> n (h w) c")
    tokens = tokens + 0.1 * torch.randn(tokens.shape, generator=generator)
    tokens = tokens + torch.randn(dim, generator=generator)
    cls = tokens.mean(1) @ torch.randn(dim, dim, generator=generator) / dim**0.5
    source = {"kind": "synthetic", "grid_size": grid_size, "dim": dim, "seed": seed}
    return Features(tokens[:num_train], cls[:num_train], tokens[num_train:], cls[num_train:], source)
