"""Image folder datasets: layouts, deterministic splits and subsets, skipped files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from toconv.data import (
    ImageFolderDataset,
    SkippedFile,
    collate_images,
    num_val_images,
    packaged_photos,
)


def write_images(folder: Path, names: list[str], size: int = 8) -> list[str]:
    rng = np.random.default_rng(len(names))
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name)
    return names


def add_broken_files(folder: Path) -> dict[str, str]:
    """A truncated JPEG, a text file and a text file named .jpg; name -> expected reason."""
    write_images(folder, ["whole.jpg"], size=64)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "whole.jpg").unlink()
    (folder / "readme.txt").write_text("not an image")
    (folder / "fake.jpg").write_text("not a jpeg either")
    return {
        "truncated.jpg": "truncated",
        "readme.txt": "not an image file",
        "fake.jpg": "cannot decode image",
    }


def test_plain_folder_split_is_deterministic_disjoint_and_complete(tmp_path):
    names = write_images(tmp_path, [f"d{i % 3}/img{i}.png" for i in range(10)])
    train = ImageFolderDataset(tmp_path, "train", val_fraction=0.2, seed=0)
    val = ImageFolderDataset(tmp_path, "val", val_fraction=0.2, seed=0)
    assert train.layout == val.layout == "folder"
    assert (len(train), len(val)) == (8, 2)
    assert set(train.files).isdisjoint(val.files) and set(train.files) | set(val.files) == set(
        names
    )
    assert train.files == sorted(train.files)
    assert ImageFolderDataset(tmp_path, "val", val_fraction=0.2, seed=0).files == val.files
    assert ImageFolderDataset(tmp_path, "val", val_fraction=0.2, seed=1).files != val.files
    assert len(ImageFolderDataset(tmp_path, "val", val_fraction=0.0)) == 0
    image = train[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (8, 8)


def test_imagenet_layout_uses_the_split_folders(tmp_path):
    write_images(
        tmp_path, ["train/n01/a.JPEG", "train/n01/b.JPEG", "train/n02/c.JPEG", "val/n01/d.JPEG"]
    )
    train = ImageFolderDataset(tmp_path, "train", val_fraction=0.5)
    val = ImageFolderDataset(tmp_path, "val")
    assert train.layout == "imagenet"
    assert train.files == ["train/n01/a.JPEG", "train/n01/b.JPEG", "train/n02/c.JPEG"]
    assert val.files == ["val/n01/d.JPEG"]
    (tmp_path / "val" / "n01" / "d.JPEG").unlink()
    (tmp_path / "val" / "n01").rmdir()
    (tmp_path / "val").rmdir()
    ImageFolderDataset(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="expected a 'val' folder"):
        ImageFolderDataset(tmp_path, "val")


def test_subset_is_deterministic_and_inside_the_split(tmp_path):
    write_images(tmp_path, [f"img{i:02d}.png" for i in range(20)])
    full = ImageFolderDataset(tmp_path, "train", val_fraction=0.25)
    subset = ImageFolderDataset(tmp_path, "train", val_fraction=0.25, subset_size=5)
    assert len(subset) == 5 and set(subset.files) < set(full.files)
    assert (
        subset.files
        == ImageFolderDataset(tmp_path, "train", val_fraction=0.25, subset_size=5).files
    )
    assert (
        subset.files
        != ImageFolderDataset(tmp_path, "train", val_fraction=0.25, subset_size=5, seed=3).files
    )
    assert (
        ImageFolderDataset(tmp_path, "train", val_fraction=0.25, subset_size=100).files
        == full.files
    )


def test_broken_files_are_skipped_counted_and_logged(tmp_path, caplog):
    write_images(tmp_path, ["good1.png", "good2.jpg"])
    expected = add_broken_files(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = ImageFolderDataset(tmp_path, "train", val_fraction=0.0)
        batches = list(DataLoader(ds, batch_size=2, collate_fn=collate_images))
    assert sum(len(b.images) for b in batches) == 2
    assert all(image.mode == "RGB" for b in batches for image in b.images)
    assert len([s for b in batches for s in b.skipped]) == 2  # load-time: truncated, fake
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert set(reasons) == set(expected)
    for name, reason in expected.items():
        assert reason in reasons[name]
        assert name in caplog.text
    assert isinstance(ds[ds.files.index("truncated.jpg")], SkippedFile)
    assert len(ds.skipped) == 3  # the same file met twice is counted once


def test_grayscale_and_alpha_images_become_rgb(tmp_path):
    Image.new("L", (5, 4), 7).save(tmp_path / "gray.png")
    Image.new("RGBA", (5, 4), (1, 2, 3, 4)).save(tmp_path / "alpha.png")
    ds = ImageFolderDataset(tmp_path, "train", val_fraction=0.0)
    assert [ds[i].mode for i in range(len(ds))] == ["RGB", "RGB"]


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="split must be 'train' or 'val', got 'test'"):
        ImageFolderDataset(tmp_path, "test")
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        ImageFolderDataset(tmp_path, val_fraction=1.0)
    with pytest.raises(ValueError, match="subset_size must be a positive int"):
        ImageFolderDataset(tmp_path, subset_size=0)
    with pytest.raises(FileNotFoundError, match="expected an image folder"):
        ImageFolderDataset(tmp_path / "missing")


@pytest.mark.parametrize(("num_files", "fraction", "size", "expected"), [
    (800, 0.2, None, 160), (200, 0.04, None, 8), (12, 0.04, None, 1), (2, 0.04, None, 1),
    (1, 0.5, None, 0), (10, 0.0, None, 0), (3, 0.9, None, 2), (160, 0.04, 32, 32),
    (200, 0.04, 32, 32), (12, 0.2, 32, 6), (1, 0.2, 32, 0),
])
def test_validation_size(num_files, fraction, size, expected):
    assert num_val_images(num_files, fraction, size) == expected


def test_val_size_is_a_count_and_keys_the_cache(tmp_path, caplog):
    write_images(tmp_path, [f"img{i:02d}.png" for i in range(40)])
    val = ImageFolderDataset(tmp_path, "val", val_size=8)
    train = ImageFolderDataset(tmp_path, "train", val_size=8, subset_size=16)
    assert (len(val), len(train)) == (8, 16) and set(val.files).isdisjoint(train.files)
    assert val.describe()["val_size"] == 8
    assert "val_size" not in ImageFolderDataset(tmp_path, "val").describe()  # old cache keys hold
    with caplog.at_level(logging.WARNING):
        assert len(ImageFolderDataset(tmp_path, "val", val_size=30)) == 20
    assert "val_size=30 but" in caplog.text
    with pytest.raises(ValueError, match="val_size must be a positive int or None"):
        ImageFolderDataset(tmp_path, val_size=0)


def test_packaged_photos_are_real_square_jpegs_with_credits():
    folder = packaged_photos()
    photos = sorted(folder.glob("*.jpg"))
    assert len(photos) == 160 and sorted(folder.iterdir()) == photos
    sizes = {Image.open(p).size for p in photos}
    assert all(w == h and 120 <= w <= 336 for w, h in sizes)
    assert sum(p.stat().st_size for p in photos) < 10 * 2**20
    credits = (folder.parent / "README.md").read_text()
    for photo in photos:
        assert f"| {photo.name} |" in credits, photo.name
    train = ImageFolderDataset(folder, "train", val_size=32)
    assert (len(train), len(ImageFolderDataset(folder, "val", val_size=32))) == (128, 32)
    assert train.num_found == 160 and not train.skipped
