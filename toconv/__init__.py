"""toconv: learned partial-convolution token compression for vision-language models."""

from toconv.geometry import ConvGeometry, RFGeometry, resolve_geometry
from toconv.models import (
    CompressorConfig,
    TokenCompressor,
    create_compressor,
    list_presets,
    load_compressor,
)

__version__ = "0.1.0"

__all__ = [
    "CompressorConfig",
    "ConvGeometry",
    "RFGeometry",
    "TokenCompressor",
    "__version__",
    "create_compressor",
    "list_presets",
    "load_compressor",
    "resolve_geometry",
]
