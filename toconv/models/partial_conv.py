"""The ``partial_conv`` family: a 2D partial convolution that shrinks a ViT token grid."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from einops import rearrange
from safetensors.torch import load_file
from torch import Tensor, nn

from toconv.geometry import PRESET_GEOMETRIES, ConvGeometry, RFGeometry, resolve_geometry
from toconv.layers import PartialConv2d
from toconv.models.io import (
    CONFIG_KEY,
    FAMILY_KEY,
    ConfigDict,
    read_config,
    weights_file,
    write_checkpoint,
)
from toconv.models.registry import register_compressor, register_preset


@dataclass
class CompressorConfig(ConfigDict):
    """Everything needed to rebuild a :class:`TokenCompressor`; travels in checkpoint metadata."""

    input_grid_size: int = 24
    output_grid_size: int = 12
    hidden_dim: int = 1024
    out_dim: int | None = None
    cls_token: bool = False
    init: Literal["avg", "random"] = "avg"
    pinned_dim: int = 0
    """Output directions held exact at clipped border windows (a pinned start's, see
    :func:`toconv.models.pca_init_`); 0 for every other compressor."""

    def __post_init__(self) -> None:
        if self.init not in ("avg", "random"):
            raise ValueError(f"init must be 'avg' or 'random', got {self.init!r}")
        if not 0 <= self.pinned_dim <= self.output_dim:
            raise ValueError(f"pinned_dim: expected 0 to {self.output_dim}, got {self.pinned_dim}")
        if self.cls_token and self.out_dim not in (None, self.hidden_dim):
            raise ValueError(f"cls_token=True passes the CLS token through unchanged, so out_dim "
                             f"must equal hidden_dim={self.hidden_dim}, got {self.out_dim}")

    @property
    def geometry(self) -> ConvGeometry:
        return resolve_geometry(self.input_grid_size, self.output_grid_size)

    @property
    def output_dim(self) -> int:
        return self.hidden_dim if self.out_dim is None else self.out_dim

    @classmethod
    def from_pretrained(cls, path: str | Path) -> CompressorConfig:
        """Read the config stored in a toconv safetensors checkpoint (file or folder)."""
        file, family, config = read_config(path)
        if family != TokenCompressor.family:
            raise ValueError(f"{file} holds a {family!r} compressor, expected {TokenCompressor.family!r}")
        return cls.from_dict(config)


@register_compressor("partial_conv")
class TokenCompressor(nn.Module):
    """Compress a row-major token grid with a 2D partial convolution.

    Shapes: (B, N, C) → (B, M, C_out) with N = input_grid_size², M = output_grid_size²; with
    ``cls_token=True`` a leading CLS token passes through unchanged: (B, 1+N, C) → (B, 1+M, C).
    """

    config_class: ClassVar[type[CompressorConfig]] = CompressorConfig
    family: ClassVar[str]

    def __init__(self, input_grid_size: int = 24, output_grid_size: int = 12,
                 hidden_dim: int = 1024, out_dim: int | None = None, cls_token: bool = False,
                 init: Literal["avg", "random"] = "avg", pinned_dim: int = 0) -> None:
        super().__init__()
        self.config = CompressorConfig(input_grid_size, output_grid_size, hidden_dim, out_dim,
                                       cls_token, init, pinned_dim)
        self.geometry = self.config.geometry
        self.conv = PartialConv2d(hidden_dim, self.config.output_dim, self.geometry,
                                  unscaled_dim=pinned_dim)
        if init == "avg":
            if self.config.output_dim != hidden_dim:
                raise ValueError(f"init='avg' needs out_dim == hidden_dim ({hidden_dim}), got "
                                 f"{self.config.output_dim}; use init='random'")
            self.conv.init_average_pooling()

    @classmethod
    def from_config(cls, config: CompressorConfig) -> TokenCompressor:
        return cls(**config.to_dict())

    @property
    def rf(self) -> RFGeometry:
        """Receptive fields of the output tokens."""
        return RFGeometry.from_conv(self.geometry)

    @property
    def pinned_directions(self) -> Tensor | None:
        """The (C_out, p) orthonormal directions a pinned start holds (None: not pinned)."""
        return self.conv.unscaled_directions

    def pin_(self, directions: Tensor | None) -> None:
        """Hold (C_out, p) orthonormal ``directions`` exact at clipped windows (the partial
        convolution does not renormalise them); they travel in the config and the checkpoint."""
        self.conv.set_unscaled_directions(directions)
        self.config = replace(self.config, pinned_dim=0 if directions is None else directions.shape[1])

    @property
    def num_input_tokens(self) -> int:
        return self.geometry.num_inputs + int(self.config.cls_token)

    @property
    def num_output_tokens(self) -> int:
        return self.geometry.num_outputs + int(self.config.cls_token)

    def forward(self, x: Tensor) -> Tensor:
        """Computes in the weights' dtype; the result has the input's dtype."""
        self._check_input(x)
        cls, grid = (x[:, :1], x[:, 1:]) if self.config.cls_token else (None, x)
        n = self.geometry.input_grid_size
        y = self.conv(rearrange(grid.to(self.conv.weight.dtype), "b (h w) c -> b c h w", h=n, w=n))
        y = rearrange(y, "b c h w -> b (h w) c").to(x.dtype)
        return y if cls is None else torch.cat([cls, y], dim=1)

    def _check_input(self, x: Tensor) -> None:
        cfg = self.config
        expected = f"(batch, {self.num_input_tokens}, {cfg.hidden_dim})"
        grid = f"{cfg.input_grid_size}x{cfg.input_grid_size} grid" + (" plus CLS" if cfg.cls_token else "")
        if x.ndim != 3:
            raise ValueError(f"{self.name} expects tokens of shape {expected}, got {tuple(x.shape)}")
        if x.shape[1] != self.num_input_tokens:
            hint = ""
            if not cfg.cls_token and x.shape[1] == self.geometry.num_inputs + 1:
                hint = " (looks like a CLS token is included: drop it or set cls_token=True)"
            raise ValueError(f"{self.name} expects {self.num_input_tokens} tokens ({grid}), got "
                             f"{x.shape[1]} in shape {tuple(x.shape)}{hint}")
        if x.shape[2] != cfg.hidden_dim:
            raise ValueError(f"{self.name} expects channel width {cfg.hidden_dim}, got {x.shape[2]} "
                             f"in shape {tuple(x.shape)}")

    @property
    def name(self) -> str:
        return f"TokenCompressor [{self.geometry.name}]"

    def __repr__(self) -> str:
        return f"{self.name}: {self.geometry.describe()}"

    def save_pretrained(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write weights and config as safetensors.

        ``path`` ending in ``.safetensors`` is the file itself; otherwise a folder that receives
        ``model.safetensors``. Extra string ``metadata`` is stored beside the config.
        Returns the file written.
        """
        return write_checkpoint(self, path, {**(metadata or {}), **compressor_metadata(self.config)})

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu",
                        **expected: Any) -> TokenCompressor:
        """Load a compressor saved by :meth:`save_pretrained` (file or folder).

        Keyword arguments name the config the caller expects (e.g. ``input_grid_size=24,
        output_grid_size=12, hidden_dim=1024``); a mismatch raises ``ValueError`` naming both.
        Weights load strictly: missing or unexpected keys are an error.
        """
        file = weights_file(path)
        config = CompressorConfig.from_pretrained(file)
        wanted = CompressorConfig.from_dict({**config.to_dict(), **expected})
        if wanted != config:
            raise ValueError(
                f"checkpoint {file} holds {_describe(config)}, but {_describe(wanted)} was expected"
            )
        model = cls.from_config(config)
        model.load_state_dict(load_file(str(file), device=str(map_location)), strict=True)
        return model.to(map_location)


def compressor_metadata(config: CompressorConfig) -> dict[str, str]:
    """Safetensors metadata (str → str) describing a compressor: config JSON plus readable geometry."""
    g = config.geometry
    return {
        FAMILY_KEY: TokenCompressor.family,
        CONFIG_KEY: json.dumps(config.to_dict(), sort_keys=True),
        "geometry": g.describe(),
        "kernel_size": str(g.kernel_size),
        "stride": str(g.stride),
        "padding": str(g.padding),
        "hidden_dim": str(config.hidden_dim),
        "out_dim": str(config.output_dim),
    }


def _describe(config: CompressorConfig) -> str:
    g = config.geometry
    return (f"{g.name} ({g.describe()}; hidden_dim={config.hidden_dim}, out_dim={config.output_dim}, "
            f"cls_token={config.cls_token})")



# Encoders whose token grids the presets fit: (name, grid side, channel width).
_ENCODERS = (("clip-l336", 24, 1024), ("dinov2-s336", 24, 384), ("clip-l224", 16, 1024))

for _in, _out in PRESET_GEOMETRIES:
    register_preset(f"{_in}to{_out}", "partial_conv", input_grid_size=_in, output_grid_size=_out,
                    hidden_dim=1024)
    for _encoder, _grid, _width in _ENCODERS:
        if _grid == _in:
            register_preset(f"{_encoder}-{_in}to{_out}", "partial_conv", input_grid_size=_in,
                            output_grid_size=_out, hidden_dim=_width)
