"""Where training tokens come from: the feature cache, or images through the frozen encoder.

Both sources yield float32 patch-token batches (B, N, C) in an order fixed by (seed, epoch), so a
resumed run can start in the middle of an epoch and see exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from toconv.data import (
    EpochBatches,
    FeatureCache,
    ImageFolderDataset,
    SkippedFile,
    build_feature_cache,
    cache_bytes_per_image,
    check_free_space,
    collate_images,
)
from toconv.encoders import FrozenEncoder

logger = logging.getLogger(__name__)


class CachedTokens:
    """Tokens read from a :class:`FeatureCache` (memory-mapped fp16 shards)."""

    def __init__(self, cache: FeatureCache, num_workers: int = 0) -> None:
        self.cache, self.num_workers = cache, num_workers
        self._files: list[str] | None = None

    @property
    def image_size(self) -> int:
        """Side of the encoder's square input, in pixels."""
        return self.cache.meta["key"]["image_size"]

    def image_path(self, index: int) -> Path:
        """The source image of cached row ``index``."""
        if self._files is None:
            self._files = self.cache.files
        return self.cache.source_root / self._files[index]

    def __len__(self) -> int:
        return len(self.cache)

    @property
    def skipped(self) -> list[SkippedFile]:
        return self.cache.skipped

    def batches(self, sampler: EpochBatches) -> Iterator[Tensor]:
        """(B, N, C) float32 CPU batches in ``sampler``'s order."""
        loader = DataLoader(self.cache, batch_sampler=sampler, num_workers=self.num_workers,
                            generator=torch.Generator())
        for batch in loader:
            yield batch["tokens"]

    def tokens(self, indices: list[int]) -> Tensor:
        """(len(indices), N, C) float32 tokens of the given images."""
        return torch.stack([self.cache[i]["tokens"] for i in indices])


class EncodedImages:
    """Tokens computed on the fly: images decoded, then encoded by the frozen encoder."""

    def __init__(self, dataset: ImageFolderDataset, encoder: FrozenEncoder, num_workers: int = 0) -> None:
        self.dataset, self.encoder, self.num_workers = dataset, encoder, num_workers

    @property
    def image_size(self) -> int:
        """Side of the encoder's square input, in pixels."""
        return self.encoder.image_size

    def image_path(self, index: int) -> Path:
        """The image file of dataset item ``index``."""
        return self.dataset.paths[index]

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def skipped(self) -> list[SkippedFile]:
        return self.dataset.skipped

    def batches(self, sampler: EpochBatches) -> Iterator[Tensor]:
        """(B, N, C) float32 batches on the encoder's device; undecodable images are dropped
        (a batch of only undecodable images comes out empty, B = 0, so batch counts stay fixed)."""
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                            collate_fn=collate_images, generator=torch.Generator())
        enc = self.encoder
        for batch in loader:
            self.dataset.record_skipped(batch.skipped)
            if batch.images:
                yield enc(batch.images).patch_tokens.float()
            else:
                yield torch.empty(0, enc.num_patches, enc.hidden_dim, device=enc.device)

    def tokens(self, indices: list[int]) -> Tensor:
        batch = collate_images([self.dataset[i] for i in indices])
        if not batch.images:
            raise ValueError(f"expected decodable images at indices {indices}, got none")
        return self.encoder(batch.images).patch_tokens.float()


TokenSource = CachedTokens | EncodedImages


def default_cache_dir(cache_root: str | Path, encoder_name: str,
                      datasets: dict[str, ImageFolderDataset]) -> Path:
    """``<cache_root>/<encoder>-<digest>``: one folder per encoder and exact set of source images."""
    key = {"encoder": encoder_name, **{split: ds.describe() for split, ds in datasets.items()}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(encoder_name).name)
    return Path(cache_root) / f"{slug}-{digest}"


def _complete_cache(folder: Path, encoder_name: str, dataset: ImageFolderDataset) -> FeatureCache | None:
    """The cache in ``folder`` if it is complete and was built from this encoder and these images."""
    if not (folder / "meta.json").is_file():
        return None
    cache = FeatureCache(folder)
    if not cache.matches(encoder_name, dataset):
        key = cache.meta["key"]
        raise ValueError(
            f"feature cache {folder} was built for encoder {key['encoder']!r} and images "
            f"{key['source']}, expected encoder {encoder_name!r} and images "
            f"{dataset.describe()}; choose another data.cache_dir (or leave it unset)"
        )
    return cache


#: What the trainer suggests when the feature cache does not fit on its disk.
TRAIN_SPACE_ADVICE = ("train on fewer images (data.use_subset=true data.subset_size=N), put the "
                      "cache on a larger disk (data.cache_root=DIR), or run the encoder in the loop "
                      "(data.use_cache=false)")


def open_or_build_caches(cache_dir: Path, encoder_name: str, datasets: dict[str, ImageFolderDataset],
                         encoder: Callable[[], FrozenEncoder], batch_size: int, num_workers: int,
                         progress: bool) -> dict[str, FeatureCache]:
    """Feature caches ``cache_dir/<split>``, built first where missing (the encoder is only
    created, by calling ``encoder()``, when a split has to be built).

    Before anything is written, the size of every split to build is estimated together and
    checked against the free disk space (:class:`~toconv.data.CacheTooLarge` otherwise).
    """
    found = {split: _complete_cache(cache_dir / split, encoder_name, dataset)
             for split, dataset in datasets.items()}
    todo = [split for split, cache in found.items() if cache is None]
    if todo:
        per_image = cache_bytes_per_image(encoder())
        count = sum(len(datasets[split]) for split in todo)
        needed = check_free_space(cache_dir, count, per_image, TRAIN_SPACE_ADVICE)
        logger.info("feature cache %s: about %.1f MiB to write (%d images x %d bytes)", cache_dir,
                    needed / 2**20, count, per_image)
    caches = {}
    for split, dataset in datasets.items():
        folder = cache_dir / split
        cache = found[split]
        if cache is None:
            logger.info("building the %s feature cache in %s (%d images)", split, folder, len(dataset))
            cache = build_feature_cache(encoder(), dataset, folder, batch_size=batch_size,
                                        num_workers=num_workers, progress=progress,
                                        space_advice=TRAIN_SPACE_ADVICE)
        else:
            logger.info("using the %s feature cache in %s", split, folder)
        caches[split] = cache
    return caches
