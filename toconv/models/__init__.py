"""Models: the compressor, its critics and its decoders, plus the preset registry."""

from toconv.geometry import gather_rf_tokens, sample_rf_tokens
from toconv.models.compressor import CompressorConfig, TokenCompressor, compressor_metadata
from toconv.models.critic import GlobalCritic, RFCritic
from toconv.models.decoder import GlobalDecoder, RFAttentionDecoder, RFConvDecoder
from toconv.models.pca_init import pca_init_
from toconv.models.registry import create_compressor, list_presets, register_preset

__all__ = [
    "CompressorConfig",
    "GlobalCritic",
    "GlobalDecoder",
    "RFAttentionDecoder",
    "RFConvDecoder",
    "RFCritic",
    "TokenCompressor",
    "compressor_metadata",
    "create_compressor",
    "gather_rf_tokens",
    "list_presets",
    "pca_init_",
    "register_preset",
    "sample_rf_tokens",
]
