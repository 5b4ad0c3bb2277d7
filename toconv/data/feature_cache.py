"""Encoder tokens computed once and stored as sharded fp16 ``.npy`` files, read by memory mapping.

Layout of a cache folder::

    shard_00000.tokens.npy   (n, N, C) float16 patch tokens
    shard_00000.cls.npy      (n, C) float16 CLS tokens
    shard_00000.json         shard record: key digest, dataset index range, files, skipped files
    meta.json                written last: a cache without it is incomplete

Every file is written to a temporary name and renamed, so a killed build leaves either finished
shards (reused by the next build with the same key) or nothing that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from toconv.data.images import ImageFolderDataset, SkippedFile, collate_images
from toconv.encoders import FrozenEncoder

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_NAME = "meta.json"
STORE_DTYPE = np.float16


#: What the trainer's and the CLI's "does not fit" messages suggest.
SPACE_ADVICE = ("encode fewer images (--subset-size N), write the cache to a larger disk (--out), "
                "or train with the encoder in the loop (no cache)")


class CacheTooLarge(ValueError):
    """The feature cache would not fit in the free space of its disk."""


def cache_bytes_per_image(encoder: FrozenEncoder) -> int:
    """Stored bytes of one image: fp16 patch tokens plus the CLS token, ``(N + 1) * C * 2``."""
    return (encoder.num_patches + 1) * encoder.hidden_dim * np.dtype(STORE_DTYPE).itemsize


def _gib(size: float) -> str:
    return f"{size / 2**30:,.2f} GiB" if size >= 2**28 else f"{size / 2**20:,.1f} MiB"


def check_free_space(folder: str | Path, num_images: int, per_image: int,
                     advice: str = SPACE_ADVICE) -> int:
    """Estimated cache size ``num_images * per_image`` in bytes, checked against the free space.

    Raises:
        CacheTooLarge: the estimate exceeds 95% of the free space of ``folder``'s disk (the
            message gives both sizes and ``advice``).
    """
    needed = num_images * per_image
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > 0.95 * free:
        raise CacheTooLarge(
            f"the feature cache would need about {_gib(needed)} ({num_images:,} images x "
            f"{per_image:,} bytes per image) in {folder}, but only {_gib(free)} are free there; "
            f"{advice}"
        )
    return needed


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary sibling of ``path``, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(data, indent=1).encode()))


def _write_npy(path: Path, array: np.ndarray) -> None:
    _atomic_write(path, lambda f: np.save(f, array))


def _shard_paths(root: Path, index: int) -> tuple[Path, Path, Path]:
    """(tokens .npy, cls .npy, record .json) of shard ``index``."""
    stem = root / f"shard_{index:05d}"
    return stem.with_suffix(".tokens.npy"), stem.with_suffix(".cls.npy"), stem.with_suffix(".json")


def cache_key(encoder: FrozenEncoder, dataset: ImageFolderDataset) -> dict[str, Any]:
    """What a cache's content depends on: format, encoder identity and geometry, source images."""
    return {
        "format_version": FORMAT_VERSION,
        "encoder": encoder.name,
        "image_size": encoder.image_size,
        "grid_size": encoder.grid_size,
        "hidden_dim": encoder.hidden_dim,
        "source": dataset.describe(),
    }


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


class FeatureCache(Dataset):
    """A finished cache folder as a Dataset: ``cache[i]`` -> ``{"tokens": (N, C), "cls": (C,)}``.

    Shards are opened with ``np.load(mmap_mode="r")`` on first access (also in each DataLoader
    worker), so only the rows read are paged in. Items are ``dtype`` tensors (default float32;
    ``torch.float16`` returns the stored values without a conversion on the CPU).
    """

    def __init__(self, root: str | Path, dtype: torch.dtype = torch.float32) -> None:
        self.root = Path(root)
        self.dtype = dtype
        meta_path = self.root / META_NAME
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"expected a complete feature cache at {str(root)!r} (with "
                f"{META_NAME}); found none. Build it with python -m toconv.cache"
            )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        version = self.meta.get("key", {}).get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: expected cache format {FORMAT_VERSION}, got {version}")
        counts = [shard["count"] for shard in self.meta["shards"]]
        self._offsets = np.cumsum([0, *counts])
        if self._offsets[-1] != self.meta["num_images"]:
            raise ValueError(
                f"{meta_path}: shards hold {self._offsets[-1]} images, "
                f"meta says num_images={self.meta['num_images']}"
            )
        self._tokens: list[np.ndarray] | None = None
        self._cls: list[np.ndarray] | None = None
        self._check_shards()

    @property
    def num_tokens(self) -> int:
        return self.meta["num_tokens"]

    @property
    def grid_size(self) -> int:
        return self.meta["key"]["grid_size"]

    @property
    def hidden_dim(self) -> int:
        return self.meta["key"]["hidden_dim"]

    @property
    def encoder_name(self) -> str:
        return self.meta["key"]["encoder"]

    @property
    def bytes_per_image(self) -> int:
        """Stored bytes per image: fp16 patch tokens plus CLS token."""
        return self.meta["bytes_per_image"]

    @property
    def source_root(self) -> Path:
        """The image folder the cache was built from."""
        return Path(self.meta["key"]["source"]["root"])

    @property
    def files(self) -> list[str]:
        """Source image of each cached row (path relative to :attr:`source_root`), in order."""
        files: list[str] = []
        for shard in self.meta["shards"]:
            record = self.root / shard["tokens"].replace(".tokens.npy", ".json")
            files += json.loads(record.read_text())["files"]
        return files

    @property
    def skipped(self) -> list[SkippedFile]:
        """Source files left out of the cache, with reasons."""
        return [SkippedFile(item["path"], item["reason"]) for item in self.meta["skipped"]]

    def matches(self, encoder_name: str, dataset: ImageFolderDataset) -> bool:
        """Whether this cache holds ``encoder_name`` tokens of exactly ``dataset``'s images.

        Lets a trainer check a cache without loading the encoder.
        """
        key = self.meta["key"]
        return key["encoder"] == encoder_name and key["source"] == dataset.describe()

    def shard_arrays(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Read-only memory maps per shard: patch tokens (n, N, C) and CLS (n, C), float16."""
        if self._tokens is None or self._cls is None:
            self._tokens = [
                np.load(self.root / s["tokens"], mmap_mode="r") for s in self.meta["shards"]
            ]
            self._cls = [np.load(self.root / s["cls"], mmap_mode="r") for s in self.meta["shards"]]
        return self._tokens, self._cls

    def _check_shards(self) -> None:
        """Raise ValueError unless every shard has the shape and dtype the meta promises."""
        tokens, cls = self.shard_arrays()
        for shard, tok, cl in zip(self.meta["shards"], tokens, cls, strict=True):
            expected = (
                (shard["count"], self.num_tokens, self.hidden_dim),
                (shard["count"], self.hidden_dim),
            )
            if (
                (tok.shape, cl.shape) != expected
                or tok.dtype != STORE_DTYPE
                or cl.dtype != STORE_DTYPE
            ):
                raise ValueError(
                    f"{self.root / shard['tokens']}: expected float16 arrays of shapes "
                    f"{expected}, got {(tok.shape, cl.shape)} {tok.dtype}"
                )

    def __getstate__(self) -> dict[str, Any]:
        # memory maps are reopened in the receiving process instead of being pickled as data
        return {**self.__dict__, "_tokens": None, "_cls": None}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a cache of {len(self)} images")
        index %= len(self)
        shard = int(np.searchsorted(self._offsets, index, side="right")) - 1
        row = index - int(self._offsets[shard])
        tokens, cls = self.shard_arrays()
        return {
            "tokens": torch.from_numpy(np.array(tokens[shard][row])).to(self.dtype),
            "cls": torch.from_numpy(np.array(cls[shard][row])).to(self.dtype),
        }

    def all_tokens(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Every image's patch tokens in one tensor (num_images, N, C) — loads the whole cache."""
        tokens, _ = self.shard_arrays()
        return torch.from_numpy(np.concatenate(tokens)).to(dtype)

    def all_cls(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Every image's CLS token (num_images, C)."""
        _, cls = self.shard_arrays()
        return torch.from_numpy(np.concatenate(cls)).to(dtype)

    def __repr__(self) -> str:
        return (
            f"FeatureCache({str(self.root)!r}, encoder={self.encoder_name!r}, images={len(self)}, "
            f"tokens={self.num_tokens}x{self.hidden_dim}, bytes_per_image={self.bytes_per_image})"
        )


def _valid_record(
    paths: tuple[Path, Path, Path], digest: str, start: int, stop: int
) -> dict | None:
    """The shard's record if it is from this build (same key and index range) and complete."""
    tokens, cls, record = paths
    if not (record.is_file() and tokens.is_file() and cls.is_file()):
        return None
    data = json.loads(record.read_text())
    return (
        data
        if (data.get("key_sha256"), data.get("start"), data.get("stop")) == (digest, start, stop)
        else None
    )


def _remove_stale(root: Path, keep: set[str]) -> None:
    """Delete shard files of other builds and temporary files of killed writes (our names only)."""
    for path in [*root.glob("shard_*"), *root.glob(".*.tmp-*")]:
        if path.name not in keep:
            path.unlink()


def build_feature_cache(
    encoder: FrozenEncoder,
    dataset: ImageFolderDataset,
    out_dir: str | Path,
    batch_size: int = 16,
    shard_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    space_advice: str = SPACE_ADVICE,
) -> FeatureCache:
    """Encode every image of ``dataset`` once and store the tokens in ``out_dir``.

    A complete cache with the same key (encoder, geometry, source images) is reused as is;
    shards finished by an interrupted build with the same key are kept; anything else is rebuilt.
    Undecodable images are skipped, logged and listed in the meta. ``overwrite`` forces a rebuild.
    Before writing, the size of what is left to encode is checked against the free disk space
    (:func:`check_free_space`, which raises :class:`CacheTooLarge` naming ``space_advice``).
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(
            f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}"
        )
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(encoder, dataset)
    digest = _digest(key)
    meta_path = root / META_NAME
    if meta_path.is_file() and not overwrite:
        if json.loads(meta_path.read_text()).get("key") == key:
            try:
                cache = FeatureCache(root)
            except (ValueError, OSError) as err:
                logger.warning("rebuilding damaged cache %s: %s", root, err)
            else:
                logger.info(
                    "feature cache %s is complete for this encoder and data: reusing it", root
                )
                return cache
        else:
            logger.info("feature cache %s was built for another encoder or data: rebuilding", root)
    meta_path.unlink(missing_ok=True)

    ranges = [
        (k, start, min(start + shard_size, len(dataset)))
        for k, start in enumerate(range(0, len(dataset), shard_size))
    ]
    records = (
        {}
        if overwrite
        else {
            k: rec
            for k, start, stop in ranges
            if (rec := _valid_record(_shard_paths(root, k), digest, start, stop)) is not None
        }
    )
    _remove_stale(root, {p.name for k in records for p in _shard_paths(root, k)})
    if records:
        logger.info("resuming %s: %d of %d shards already built", root, len(records), len(ranges))

    todo = [(k, start, stop) for k, start, stop in ranges if k not in records]
    try:
        needed = check_free_space(root, sum(stop - start for _, start, stop in todo),
                                  cache_bytes_per_image(encoder), space_advice)
    except CacheTooLarge:
        if not any(root.iterdir()):
            root.rmdir()
        raise
    logger.info("feature cache %s: writing about %s for %d images", root, _gib(needed),
                sum(stop - start for _, start, stop in todo))
    batches = [
        (k, list(range(b, min(b + batch_size, stop))))
        for k, start, stop in todo
        for b in range(start, stop, batch_size)
    ]
    loader = DataLoader(
        dataset,
        batch_sampler=[idx for _, idx in batches],
        num_workers=num_workers,
        collate_fn=collate_images,
    )
    started = time.perf_counter()
    tokens: list[np.ndarray] = []
    cls: list[np.ndarray] = []
    skipped: list[SkippedFile] = []
    bar = tqdm(
        total=sum(stop - start for _, start, stop in todo),
        disable=not progress,
        desc=f"caching {dataset.split}",
        unit="img",
    )
    for i, ((k, indices), batch) in enumerate(zip(batches, loader, strict=True)):
        if batch.images:
            out = encoder(batch.images)
            tokens.append(out.patch_tokens.to("cpu", torch.float16).numpy())
            cls.append(out.cls_token.to("cpu", torch.float16).numpy())
        skipped += batch.skipped
        bar.update(len(indices))
        if i + 1 == len(batches) or batches[i + 1][0] != k:
            _, start, stop = ranges[k]
            records[k] = _write_shard(
                root, k, start, stop, dataset, encoder, tokens, cls, skipped, digest
            )
            tokens, cls, skipped = [], [], []
    bar.close()

    load_skips = [SkippedFile(*item) for k in sorted(records) for item in records[k]["skipped"]]
    dataset.record_skipped(load_skips)
    shards = [
        {
            "tokens": _shard_paths(root, k)[0].name,
            "cls": _shard_paths(root, k)[1].name,
            "count": records[k]["count"],
        }
        for k in sorted(records)
        if records[k]["count"]
    ]
    num_images = sum(shard["count"] for shard in shards)
    if num_images == 0:
        raise ValueError(
            f"expected at least one decodable image in {dataset.root} "
            f"(split {dataset.split!r}), got none ({len(dataset.skipped)} skipped)"
        )
    num_tokens = encoder.num_patches
    meta = {
        "key": key,
        "num_images": num_images,
        "num_tokens": num_tokens,
        "dtype": "float16",
        "bytes_per_image": cache_bytes_per_image(encoder),
        "disk_bytes": sum(p.stat().st_size for p in root.glob("shard_*.npy")),
        "encoder_compute_dtype": str(encoder.dtype).removeprefix("torch."),
        "build_seconds": round(time.perf_counter() - started, 2),
        "shards": shards,
        "skipped": [{"path": s.path, "reason": s.reason} for s in dataset.skipped],
    }
    _write_json(meta_path, meta)
    logger.info(
        "feature cache %s: %d images, %d skipped, %d bytes per image",
        root,
        num_images,
        len(meta["skipped"]),
        meta["bytes_per_image"],
    )
    return FeatureCache(root)


def _write_shard(
    root: Path,
    index: int,
    start: int,
    stop: int,
    dataset: ImageFolderDataset,
    encoder: FrozenEncoder,
    tokens: list[np.ndarray],
    cls: list[np.ndarray],
    skipped: list[SkippedFile],
    digest: str,
) -> dict[str, Any]:
    """Write one shard's arrays, then its record (the record marks the shard as finished)."""
    empty = np.zeros((0, encoder.num_patches, encoder.hidden_dim), STORE_DTYPE)
    shard_tokens = np.concatenate(tokens) if tokens else empty
    shard_cls = np.concatenate(cls) if cls else empty[:, 0]
    if not (np.isfinite(shard_tokens).all() and np.isfinite(shard_cls).all()):
        raise ValueError(
            f"expected finite encoder tokens for images {start}..{stop - 1} of "
            f"{dataset.root}, got inf/nan after the float16 cast"
        )
    tokens_path, cls_path, record_path = _shard_paths(root, index)
    _write_npy(tokens_path, shard_tokens)
    _write_npy(cls_path, shard_cls)
    skipped_paths = {s.path for s in skipped}
    record = {
        "key_sha256": digest,
        "start": start,
        "stop": stop,
        "count": len(shard_tokens),
        "files": [
            f for f in dataset.files[start:stop] if str(dataset.root / f) not in skipped_paths
        ],
        "skipped": [list(s) for s in skipped],
    }
    _write_json(record_path, record)
    return record
