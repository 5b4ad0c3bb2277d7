"""End-to-end ``python -m toconv.train`` on a tiny random CLIP and a few generated images."""

from __future__ import annotations

import json
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

SMALL = ["training.batch_size=4", "training.n_critic=2", "training.warmup_steps=2", "model.rf_discriminator.hidden_dim=32",
         "model.rf_discriminator.depth=2", "model.rf_autoencoder.num_layers=2",
         "model.rf_autoencoder.num_heads=2", "experiment.log_every_steps=1", "hardware.device=cpu"]


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


def test_visualizations_per_evaluation(full_run):
    _, run_dir = full_run
    folder = run_dir / "visualizations"
    for epoch in (1, 2):
        heatmap = matplotlib.image.imread(str(folder / f"rf_heatmap_epoch_{epoch}.png"))
        assert heatmap.ndim == 3 and heatmap.shape[0] > 200
        for label in ("best", "worst", "median"):
            (png,) = folder.glob(f"rf_{label}_epoch_{epoch}_idx_*.png")
            assert 0 <= int(png.stem.rsplit("_", 1)[1]) < 144
            assert matplotlib.image.imread(str(png)).shape[1] > 800


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


def test_resume_matches_uninterrupted_bit_for_bit(workdir):
    """4 steps, stop (mid-epoch 2), resume to 8 == 8 steps in one go; dropout makes RNG matter."""
    args = ["training.epochs=3", "training.eval_every_epochs=5", "model.rf_discriminator.dropout=0.2"]
    run(workdir, "stopped", *args, "training.max_steps=4")
    summary, resumed = run(workdir, "stopped", *args, "training.max_steps=8", "training.resume=auto")
    _, straight = run(workdir, "straight", *args, "training.max_steps=8")
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
