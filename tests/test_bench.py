"""Smoke test of the benchmark on generated tokens, and checks of its building blocks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from toconv.bench.config import quick_config
from toconv.bench.data import synthetic_features
from toconv.bench.reducers import average_pool, tome_merge
from toconv.bench.report import write_report
from toconv.bench.runner import load_checkpoints, run_benchmark
from toconv.geometry import RFGeometry, resolve_geometry
from toconv.metrics import ProbeSettings, frechet_distance, linear_information
from toconv.models import TokenCompressor


def test_tome_merge_keeps_size_weighted_mean_and_sources() -> None:
    x = torch.randn(2, 36, 8)
    merged, source = tome_merge(x, 9)
    assert merged.shape == (2, 9, 8)
    assert source.shape == (2, 36) and int(source.max()) == 8
    counts = torch.stack([torch.bincount(s, minlength=9) for s in source]).float()
    # the count-weighted mean of merged tokens equals the mean of the originals
    torch.testing.assert_close((merged * counts[..., None]).sum(1) / 36, x.mean(1), atol=1e-5, rtol=1e-5)


def test_average_pool_matches_blocks() -> None:
    x = torch.arange(16.0).reshape(1, 16, 1)
    assert average_pool(x, 2).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]


def test_frechet_zero_for_same_sample_and_grows_with_shift() -> None:
    a = torch.randn(500, 4)
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, a + 1.0) > 3.9


def test_linear_information_is_exact_for_affine_rfs_and_zero_for_noise() -> None:
    rf = RFGeometry.from_conv(resolve_geometry(8, 4))
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randn(64, 4, 4, 6, generator=gen)
    slot_scale = torch.tensor([1.0, -2.0, 0.5, 3.0])  # each RF slot is a different affine map of z
    x = torch.einsum("nhwc,pq->nhpwqc", blocks, torch.ones(2, 2)) * slot_scale.view(1, 1, 2, 1, 2, 1)
    x = x.reshape(64, 64, 6) + 1.0
    z = blocks.reshape(64, 16, 6)
    exact = linear_information(z[:48], x[:48], z[48:], x[48:], rf, ridge=1e-9)
    assert exact["r2"] > 0.999 and exact["centered_cosine"] > 0.999
    noise = torch.randn(64, 16, 6, generator=gen)
    assert abs(linear_information(noise[:48], x[:48], noise[48:], x[48:], rf)["r2"]) < 0.2
    with pytest.raises(ValueError, match=r"expected val tokens \(n, 16, C\) compressed"):
        linear_information(z[:48], x[:48], z[48:, :9], x[48:], rf)


SMALL_RECIPE = {"steps": 2, "batch_size": 4, "critic.width": 16, "decoder.width": 16}


def tiny_config(**overrides):
    return quick_config(
        recipe_changes=SMALL_RECIPE,
        probe=replace(ProbeSettings(), decoder_steps=3, decoder_hidden_dim=16, head_steps=3,
                      frechet_samples_per_image=4, swd_projections=8),
        llm_text_tokens=4, timing_images=2, timing_repeats=1, **overrides)


def test_benchmark_smoke_on_generated_tokens(tmp_path) -> None:
    features = synthetic_features(24, 8, grid_size=24, dim=16)
    report = run_benchmark(features, tiny_config(output_grid_sizes=(12, 6)), encoder_name=None,
                           log=lambda _: None)
    out = write_report(report, tmp_path / "report")
    data = json.loads((out / "results.json").read_text())
    methods = {"avg-pool", "bilinear", "tome", "keep-center", "toconv-init", "toconv-rf", "toconv-global",
               "toconv-recon", "unshuffle-linear"}
    for size, tokens in (("12", 144), ("6", 36)):
        block = data["sizes"][size]
        assert set(block["methods"]) == methods
        for m in block["methods"].values():
            assert m["tokens"] == tokens
            assert m["information"]["r2"] <= 1.0 and m["frechet"] >= -1e-6
            assert m["information_linear"]["r2"] <= 1.0
    assert [r["image_tokens"] for r in data["llm_prefill"]["rows"]] == [576, 144, 36]
    assert "toconv-rf" in (out / "report.md").read_text() and "| 24→6 |" in (out / "report.md").read_text()
    assert {p.name for p in out.glob("*.png")} == {"info_kept.png", "info_kept_decoder.png",
                                                    "distribution.png", "plug_in.png", "tradeoff.png"}


def test_checkpoints_are_scored_as_extra_rows_at_their_own_size(tmp_path) -> None:
    features = synthetic_features(24, 8, grid_size=16, dim=16)
    run_dir = tmp_path / "runs" / "mine"
    run_dir.mkdir(parents=True)
    TokenCompressor(16, 4, hidden_dim=16).save_pretrained(run_dir / "latest.safetensors")
    checkpoints = load_checkpoints([run_dir / "latest.safetensors"], features)
    report = run_benchmark(features, tiny_config(output_grid_sizes=(8,)), encoder_name=None,
                           log=lambda _: None, checkpoints=checkpoints)
    assert list(report["sizes"]) == ["8", "4"]
    block = report["sizes"]["4"]
    assert block["geometry"]["input_grid_size"] == 16 and "mine/latest" in block["methods"]
    row = block["methods"]["mine/latest"]
    # an average-pooling-initialised checkpoint at 16→4 is exact 4×4 average pooling
    assert row["information_linear"]["r2"] == pytest.approx(block["methods"]["avg-pool"]["information_linear"]["r2"])
    assert row["source"] == str(run_dir / "latest.safetensors")
    TokenCompressor(24, 4, hidden_dim=16).save_pretrained(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="reads a 24x24 grid of width 16, but the benchmark's tokens are a 16x16"):
        load_checkpoints([tmp_path / "other.safetensors"], features)
