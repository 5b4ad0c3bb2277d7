"""Image datasets and the on-disk cache of frozen-encoder tokens."""

from toconv.data.feature_cache import FeatureCache, build_feature_cache, cache_key
from toconv.data.images import (
    IMAGE_EXTENSIONS,
    ImageBatch,
    ImageFolderDataset,
    SkippedFile,
    collate_images,
    load_rgb,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "FeatureCache",
    "ImageBatch",
    "ImageFolderDataset",
    "SkippedFile",
    "build_feature_cache",
    "cache_key",
    "collate_images",
    "load_rgb",
]
