"""Token-grid geometry: convolution presets and the receptive field of every output token."""

from toconv.geometry.conv import PRESET_GEOMETRIES, ConvGeometry, conv_output_size, resolve_geometry
from toconv.geometry.receptive_field import RFGeometry, gather_rf_tokens, sample_rf_tokens

__all__ = [
    "PRESET_GEOMETRIES",
    "ConvGeometry",
    "RFGeometry",
    "conv_output_size",
    "gather_rf_tokens",
    "resolve_geometry",
    "sample_rf_tokens",
]
