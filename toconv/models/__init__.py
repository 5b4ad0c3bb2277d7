"""What ships: compressor families, their named configurations and checkpoints.

Nothing here imports the training side (critics, decoders, losses, designs); see
:mod:`toconv.objective` for what trains a compressor.
"""

from toconv.models.partial_conv import CompressorConfig, TokenCompressor, compressor_metadata
from toconv.models.pca_init import init_compressor, pca_init_
from toconv.models.registry import (
    compressor_class,
    create_compressor,
    list_families,
    list_presets,
    load_compressor,
    register_compressor,
    register_preset,
)
from toconv.models.slots import SemanticVQ, SlotCompressor, SlotConfig, init_slots

__all__ = [
    "CompressorConfig",
    "SemanticVQ",
    "SlotCompressor",
    "SlotConfig",
    "TokenCompressor",
    "compressor_class",
    "compressor_metadata",
    "create_compressor",
    "init_compressor",
    "init_slots",
    "list_families",
    "list_presets",
    "load_compressor",
    "pca_init_",
    "register_compressor",
    "register_preset",
]
