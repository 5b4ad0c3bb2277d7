"""Feature cache: fp16 shards, memory-mapped reads, meta, reuse, resume after a kill, CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from toconv.cache import main as cache_main
from toconv.data import FeatureCache, ImageFolderDataset, build_feature_cache
from toconv.encoders import build_encoder


@pytest.fixture(scope="module")
def encoder(tiny_clip_path):
    return build_encoder(str(tiny_clip_path))


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """Six generated photos of different sizes, a truncated JPEG and a text file."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 256, (340 + 7 * i, 360, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.jpg")
    data = (folder / "img0.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.txt").write_text("not an image")
    return folder


class CountingEncoder:
    """Wraps an encoder and counts the images it encodes."""

    def __init__(self, encoder):
        self.inner, self.encoded = encoder, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, images):
        self.encoded += len(images)
        return self.inner(images)


def test_cache_round_trip_matches_the_encoder(encoder, image_dir, tmp_path):
    ds = ImageFolderDataset(image_dir, "train", val_fraction=0.0)
    cache = build_feature_cache(
        encoder, ds, tmp_path / "cache", batch_size=3, shard_size=4, progress=False
    )
    reloaded = FeatureCache(tmp_path / "cache")
    assert len(reloaded) == 6 and reloaded.meta == cache.meta
    good = [ds[i] for i in range(len(ds)) if ds.files[i] != "broken.jpg"]
    expected = encoder(good)
    tokens = torch.stack([reloaded[i]["tokens"] for i in range(len(reloaded))])
    cls = torch.stack([reloaded[i]["cls"] for i in range(len(reloaded))])
    assert tokens.dtype == torch.float32 and tokens.shape == (6, 576, 32)
    torch.testing.assert_close(tokens, expected.patch_tokens, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(cls, expected.cls_token, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(reloaded.all_tokens(), tokens)
    torch.testing.assert_close(reloaded.all_cls(), cls)
    torch.testing.assert_close(reloaded[-1]["tokens"], tokens[-1])
    half = FeatureCache(tmp_path / "cache", dtype=torch.float16)[4]["tokens"]
    assert half.dtype == torch.float16 and torch.equal(half.float(), tokens[4])
    with pytest.raises(IndexError, match="index 6 out of range for a cache of 6 images"):
        reloaded[6]

    token_maps, cls_maps = reloaded.shard_arrays()
    assert [len(m) for m in token_maps] == [3, 3]  # shard 0 (4 files) lost broken.jpg
    assert all(isinstance(m, np.memmap) and m.dtype == np.float16 for m in token_maps + cls_maps)

    meta = reloaded.meta
    assert meta["key"]["encoder"] == encoder.name
    assert (meta["key"]["grid_size"], meta["key"]["hidden_dim"], meta["key"]["image_size"]) == (
        24,
        32,
        336,
    )
    assert meta["key"]["source"]["split"] == "train" and meta["key"]["source"]["layout"] == "folder"
    assert meta["num_images"] == 6 and meta["num_tokens"] == 576
    assert reloaded.bytes_per_image == meta["bytes_per_image"] == 577 * 32 * 2
    assert sorted(Path(s.path).name for s in reloaded.skipped) == ["broken.jpg", "notes.txt"]
    assert not list((tmp_path / "cache").glob(".*tmp*"))


def test_complete_cache_is_reused_and_a_new_key_rebuilds(encoder, image_dir, tmp_path):
    ds = ImageFolderDataset(image_dir, "train", val_fraction=0.0)
    build_feature_cache(encoder, ds, tmp_path / "c", shard_size=4, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").iterdir()}
    counting = CountingEncoder(encoder)
    build_feature_cache(counting, ds, tmp_path / "c", shard_size=4, progress=False)
    assert counting.encoded == 0
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").iterdir()}

    subset = ImageFolderDataset(image_dir, "train", val_fraction=0.0, subset_size=2)
    cache = build_feature_cache(counting, subset, tmp_path / "c", shard_size=4, progress=False)
    assert counting.encoded == len(cache) == 2
    assert cache.meta["key"]["source"]["subset_size"] == 2
    assert cache.matches(encoder.name, subset) and not cache.matches(encoder.name, ds)
    assert not cache.matches("dinov2-s336", subset)
    assert sorted(p.name for p in (tmp_path / "c").glob("shard_*")) == [
        "shard_00000.cls.npy",
        "shard_00000.json",
        "shard_00000.tokens.npy",
    ]


def test_killed_build_looks_incomplete_and_resumes_finished_shards(encoder, image_dir, tmp_path):
    ds = ImageFolderDataset(image_dir, "train", val_fraction=0.0)
    full = build_feature_cache(
        encoder, ds, tmp_path / "c", shard_size=3, progress=False
    ).all_tokens()
    # state of a build killed while writing shard 1: meta and shard 1's record never got written
    (tmp_path / "c" / "meta.json").unlink()
    (tmp_path / "c" / "shard_00001.json").unlink()
    (tmp_path / "c" / ".shard_00001.cls.npy.tmp-12345").write_bytes(b"half written")
    with pytest.raises(FileNotFoundError, match="expected a complete feature cache"):
        FeatureCache(tmp_path / "c")
    counting = CountingEncoder(encoder)
    resumed = build_feature_cache(counting, ds, tmp_path / "c", shard_size=3, progress=False)
    assert counting.encoded == 3  # only shard 1 (img2, img3, img4) was encoded again
    torch.testing.assert_close(resumed.all_tokens(), full)
    assert len(resumed.skipped) == 2
    assert not list((tmp_path / "c").glob(".*tmp*"))


def test_workers_and_a_shard_of_only_broken_files(encoder, image_dir, tmp_path):
    ds = ImageFolderDataset(image_dir, "train", val_fraction=0.0)
    assert ds.files[0] == "broken.jpg"
    cache = build_feature_cache(
        encoder, ds, tmp_path / "c", shard_size=1, num_workers=2, progress=False
    )
    assert len(cache) == 6 and len(cache.meta["shards"]) == 6
    # broken.jpg failed inside a worker process; the meta still counts it
    assert sorted(Path(s.path).name for s in cache.skipped) == ["broken.jpg", "notes.txt"]
    reference = build_feature_cache(encoder, ds, tmp_path / "ref", shard_size=7, progress=False)
    torch.testing.assert_close(cache.all_tokens(), reference.all_tokens())


def test_cache_pickles_without_its_data(encoder, image_dir, tmp_path):
    ds = ImageFolderDataset(image_dir, "train", val_fraction=0.0)
    cache = build_feature_cache(encoder, ds, tmp_path / "c", progress=False)
    payload = pickle.dumps(cache)
    assert len(payload) < cache.bytes_per_image
    torch.testing.assert_close(pickle.loads(payload)[2]["tokens"], cache[2]["tokens"])


def test_all_images_broken_is_an_error(encoder, tmp_path):
    (tmp_path / "a.jpg").write_text("text")
    ds = ImageFolderDataset(tmp_path, "train", val_fraction=0.0)
    with pytest.raises(ValueError, match="expected at least one decodable image"):
        build_feature_cache(encoder, ds, tmp_path / "c", progress=False)


def test_cli_writes_both_splits(tiny_clip_path, image_dir, tmp_path, capsys):
    out = tmp_path / "features"
    cache_main(
        [
            "--encoder",
            str(tiny_clip_path),
            "--images",
            str(image_dir),
            "--out",
            str(out),
            "--val-fraction",
            "0.5",
            "--batch-size",
            "4",
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    train, val = FeatureCache(out / "train"), FeatureCache(out / "val")
    assert len(train) + len(val) == 6
    assert json.loads((out / "val" / "meta.json").read_text())["key"]["source"]["split"] == "val"
    assert "36,928 bytes per image" in printed and printed.count("images (") == 2


def test_cli_reports_a_missing_folder_in_one_line(tiny_clip_path, tmp_path):
    with pytest.raises(SystemExit, match="error: expected an image folder at .*missing"):
        cache_main(
            [
                "--encoder",
                str(tiny_clip_path),
                "--images",
                str(tmp_path / "missing"),
                "--out",
                str(tmp_path / "out"),
            ]
        )


def test_files_name_the_source_image_of_every_row(encoder, image_dir, tmp_path):
    ds = ImageFolderDataset(image_dir, "train", val_fraction=0.0)
    cache = build_feature_cache(encoder, ds, tmp_path / "c", shard_size=4, progress=False)
    assert cache.files == [f for f in ds.files if f != "broken.jpg"]
    assert cache.source_root == image_dir.resolve()
    assert all((cache.source_root / f).is_file() for f in cache.files)


def test_a_cache_larger_than_the_free_space_is_refused(encoder, image_dir, tmp_path, monkeypatch):
    import shutil

    from toconv.data import CacheTooLarge, check_free_space, feature_cache

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(feature_cache.shutil, "disk_usage", lambda _: usage._replace(free=10**5))
    ds = ImageFolderDataset(image_dir, "train", val_fraction=0.0)
    with pytest.raises(CacheTooLarge, match=r"7 images x 36,928 bytes per image\) in .*--subset-size"):
        build_feature_cache(encoder, ds, tmp_path / "deep" / "c", progress=False)
    assert not (tmp_path / "deep" / "c").exists()
    assert check_free_space(tmp_path / "nowhere" / "yet", 2, 36_928) == 73_856  # fits
    with pytest.raises(SystemExit, match="python -m toconv.cache: error: the feature cache would"):
        cache_main(["--encoder", str(encoder.name), "--images", str(image_dir),
                    "--out", str(tmp_path / "cli"), "--quiet"])


def test_cli_val_size_is_a_count(tiny_clip_path, image_dir, tmp_path):
    out = tmp_path / "features"
    cache_main(["--encoder", str(tiny_clip_path), "--images", str(image_dir), "--out", str(out),
                "--val-size", "2", "--quiet"])
    val = FeatureCache(out / "val")
    assert val.meta["key"]["source"]["val_size"] == 2 and val.meta["key"]["source"]["num_files"] == 2
