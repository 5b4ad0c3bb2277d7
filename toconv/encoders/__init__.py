"""Frozen vision encoders that turn images into patch-token grids (B, N, C)."""

from toconv.encoders.base import EncoderOutput, FrozenEncoder, resolve_dtype
from toconv.encoders.registry import (
    CLIP_L336_HUB_ID,
    build_encoder,
    describe_encoders,
    list_encoders,
    preset_token_shape,
)

__all__ = [
    "CLIP_L336_HUB_ID",
    "EncoderOutput",
    "FrozenEncoder",
    "build_encoder",
    "describe_encoders",
    "list_encoders",
    "preset_token_shape",
    "resolve_dtype",
]
