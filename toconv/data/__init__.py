"""Image datasets, the on-disk cache of frozen-encoder tokens and the batch order."""

from toconv.data.feature_cache import FeatureCache, build_feature_cache, cache_key
from toconv.data.images import (
    IMAGE_EXTENSIONS,
    ImageBatch,
    ImageFolderDataset,
    SkippedFile,
    collate_images,
    load_rgb,
)
from toconv.data.sampler import EpochBatches, step_batches

__all__ = [
    "EpochBatches",
    "IMAGE_EXTENSIONS",
    "FeatureCache",
    "ImageBatch",
    "ImageFolderDataset",
    "SkippedFile",
    "build_feature_cache",
    "cache_key",
    "collate_images",
    "load_rgb",
    "step_batches",
]
