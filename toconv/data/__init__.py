"""Image datasets, the on-disk cache of frozen-encoder tokens and the batch order."""

from toconv.data.feature_cache import (
    SPACE_ADVICE,
    CacheTooLarge,
    FeatureCache,
    build_feature_cache,
    cache_bytes_per_image,
    cache_key,
    check_free_space,
)
from toconv.data.images import (
    IMAGE_EXTENSIONS,
    ImageBatch,
    ImageFolderDataset,
    SkippedFile,
    collate_images,
    load_rgb,
    num_val_images,
)
from toconv.data.photos import PHOTOS_DIR, packaged_photos
from toconv.data.sampler import EpochBatches, step_batches

__all__ = [
    "SPACE_ADVICE",
    "CacheTooLarge",
    "EpochBatches",
    "IMAGE_EXTENSIONS",
    "PHOTOS_DIR",
    "FeatureCache",
    "ImageBatch",
    "ImageFolderDataset",
    "SkippedFile",
    "build_feature_cache",
    "cache_bytes_per_image",
    "cache_key",
    "check_free_space",
    "collate_images",
    "load_rgb",
    "num_val_images",
    "packaged_photos",
    "step_batches",
]
