"""Named compressor configurations, ``create_compressor("24to12")`` style."""

from __future__ import annotations

from typing import Any

from toconv.geometry import PRESET_GEOMETRIES
from toconv.models.compressor import CompressorConfig, TokenCompressor

# Encoders whose token grids the presets fit: (name, grid side, channel width).
_ENCODERS = (("clip-l336", 24, 1024), ("dinov2-s336", 24, 384), ("clip-l224", 16, 1024))

_PRESETS: dict[str, CompressorConfig] = {}


def register_preset(name: str, config: CompressorConfig) -> None:
    """Add a named configuration; names are unique."""
    if name in _PRESETS:
        raise ValueError(f"preset {name!r} is already registered")
    _PRESETS[name] = config


for _in, _out in PRESET_GEOMETRIES:
    register_preset(f"{_in}to{_out}", CompressorConfig(_in, _out, hidden_dim=1024))
    for _encoder, _grid, _width in _ENCODERS:
        if _grid == _in:
            register_preset(f"{_encoder}-{_in}to{_out}", CompressorConfig(_in, _out, hidden_dim=_width))


def list_presets() -> list[str]:
    """Names accepted by :func:`create_compressor`."""
    return sorted(_PRESETS)


def create_compressor(name: str, **overrides: Any) -> TokenCompressor:
    """Build a compressor from a named preset; keyword arguments override config fields."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    base = _PRESETS[name].to_dict()
    return TokenCompressor.from_config(CompressorConfig.from_dict({**base, **overrides}))
