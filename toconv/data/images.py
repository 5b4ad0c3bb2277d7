"""Image folders (ImageNet layout or plain) with deterministic splits and skip accounting."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from PIL import Image
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
Split = Literal["train", "val"]


class SkippedFile(NamedTuple):
    """A file that was not used, and why."""

    path: str
    reason: str


@dataclass
class ImageBatch:
    """What :func:`collate_images` makes of a list of dataset items."""

    images: list[Image.Image]
    skipped: list[SkippedFile]


def collate_images(items: list[Image.Image | SkippedFile]) -> ImageBatch:
    """DataLoader ``collate_fn``: keeps the decoded images, sets failed loads aside."""
    images = [item for item in items if isinstance(item, Image.Image)]
    skipped = [item for item in items if isinstance(item, SkippedFile)]
    return ImageBatch(images=images, skipped=skipped)


def load_rgb(path: Path) -> Image.Image | SkippedFile:
    """Decode ``path`` fully as RGB; a corrupt, truncated or non-image file gives a SkippedFile."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as err:  # any decoder failure skips the file; it never stops a run
        return SkippedFile(str(path), f"cannot decode image: {type(err).__name__}: {err}")


def num_val_images(num_files: int, val_fraction: float, val_size: int | None = None) -> int:
    """Validation images of a plain folder of ``num_files`` images.

    ``val_size`` (a count) wins, capped at half the folder; otherwise ``round(num_files *
    val_fraction)``, raised to one image while ``val_fraction > 0`` and capped at
    ``num_files - 1``, so a small folder still gets both splits when it has two images.
    """
    if val_size is not None:
        return min(val_size, num_files // 2)
    if val_fraction <= 0.0 or num_files < 2:
        return 0
    return min(max(1, round(num_files * val_fraction)), num_files - 1)


class ImageFolderDataset(Dataset):
    """Images under ``root``, one split, optionally a deterministic subset.

    Layouts: ImageNet style (``root/train/<class>/*`` and ``root/val/<class>/*``; the split's own
    folder is used) or a plain folder searched recursively, split by a seeded permutation into
    validation images and the rest for training: ``val_size`` images when it is given (at most
    half of the folder), else ``round(n * val_fraction)`` but at least one while ``val_fraction``
    is positive (and at most ``n - 1``); see :func:`num_val_images`.
    ``subset_size`` keeps a seeded random subset of the split. Files are sorted by relative path.

    ``ds[i]`` is an RGB ``PIL.Image`` or, when decoding fails, a :class:`SkippedFile` (dropped by
    :func:`collate_images`). Files without an image extension are skipped when indexing. Every skip
    is logged as a warning and listed in ``ds.skipped`` (loads in DataLoader worker processes are
    not seen by the parent: collect ``ImageBatch.skipped`` there, see :meth:`record_skipped`).
    """

    def __init__(
        self,
        root: str | Path,
        split: Split = "train",
        val_fraction: float = 0.2,
        subset_size: int | None = None,
        seed: int = 0,
        val_size: int | None = None,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if val_size is not None and val_size < 1:
            raise ValueError(f"val_size must be a positive int or None, got {val_size}")
        if subset_size is not None and subset_size < 1:
            raise ValueError(f"subset_size must be a positive int or None, got {subset_size}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"expected an image folder at {str(root)!r}, found no folder there"
            )
        self.split = split
        self.val_fraction = val_fraction
        self.val_size = val_size
        self.num_found = 0
        self.subset_size = subset_size
        self.seed = seed
        self.layout = (
            "imagenet" if any((self.root / s).is_dir() for s in ("train", "val")) else "folder"
        )
        self._skipped: dict[str, str] = {}
        if self.layout == "imagenet":
            split_root = self.root / split
            if not split_root.is_dir():
                raise FileNotFoundError(
                    f"ImageNet layout at {str(root)!r}: expected a {split!r} "
                    f"folder beside the other split, found none"
                )
            files = self._scan(split_root)
            self.num_found = len(files)
        else:
            found = self._scan(self.root)
            self.num_found = len(found)
            files = self._split(found)
        if subset_size is not None and subset_size < len(files):
            files = sorted(random.Random(f"subset-{seed}").sample(files, subset_size))
        elif subset_size is not None:
            logger.info("subset_size=%d >= %d %s images: using all", subset_size, len(files), split)
        self.files: list[str] = files
        if not files:
            logger.warning("no images found for split %r under %s", split, self.root)

    def _scan(self, folder: Path) -> list[str]:
        """Relative paths (to ``root``) of image files under ``folder``, sorted; others skipped."""
        found = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames.sort()
            for filename in filenames:
                path = Path(dirpath) / filename
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    found.append(path.relative_to(self.root).as_posix())
                else:
                    self.record_skipped([SkippedFile(str(path), "not an image file (extension)")])
        return sorted(found)

    def _split(self, files: list[str]) -> list[str]:
        """Seeded permutation: the first :func:`num_val_images` files are validation."""
        order = random.Random(f"split-{self.seed}").sample(files, len(files))
        num_val = num_val_images(len(files), self.val_fraction, self.val_size)
        if self.val_size is not None and num_val < self.val_size and self.split == "val":
            logger.warning("val_size=%d but %s holds %d images: validating on %d (half of them)",
                           self.val_size, self.root, len(files), num_val)
        return sorted(order[:num_val] if self.split == "val" else order[num_val:])

    def record_skipped(self, skipped: list[SkippedFile]) -> None:
        """Log and remember skipped files (each path once)."""
        for item in skipped:
            if item.path not in self._skipped:
                logger.warning("skipping %s: %s", item.path, item.reason)
                self._skipped[item.path] = item.reason

    @property
    def skipped(self) -> list[SkippedFile]:
        """Files skipped so far (when indexing and when loading), in the order they were met."""
        return [SkippedFile(path, reason) for path, reason in self._skipped.items()]

    @property
    def paths(self) -> list[Path]:
        """``root / relative path`` of every image, in dataset order."""
        return [self.root / f for f in self.files]

    def describe(self) -> dict[str, Any]:
        """Identity of this dataset for cache metadata: root, layout, split, sizes, files digest."""
        digest = hashlib.sha256("\n".join(self.files).encode()).hexdigest()[:16]
        described = {
            "root": str(self.root.resolve()),
            "layout": self.layout,
            "split": self.split,
            "val_fraction": self.val_fraction if self.layout == "folder" else None,
            "subset_size": self.subset_size,
            "seed": self.seed,
            "num_files": len(self.files),
            "files_sha256": digest,
        }
        if self.val_size is not None and self.layout == "folder":
            described["val_size"] = self.val_size
        return described

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Image.Image | SkippedFile:
        item = load_rgb(self.root / self.files[index])
        if isinstance(item, SkippedFile):
            self.record_skipped([item])
        return item
