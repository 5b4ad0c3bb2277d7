"""Smoke test of the benchmark on generated tokens, and checks of its building blocks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from toconv.bench.config import DEFAULT_METHODS, quick_config
from toconv.bench.data import synthetic_features
from toconv.bench.methods import moment_preserving_rotation
from toconv.bench.reducers import antialiased_resize, average_pool, tome_merge
from toconv.bench.report import compare, write_report
from toconv.bench.runner import load_checkpoints, run_benchmark, seed_summary
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


def test_antialiased_resize_is_not_a_copy_of_pooling_or_of_one_token() -> None:
    x = torch.randn(2, 144, 3)
    resized = antialiased_resize(x, 4)
    assert resized.shape == (2, 16, 3)
    assert not torch.allclose(resized, average_pool(x, 4), atol=1e-3)
    grid = x.reshape(2, 12, 12, 3)
    assert not any(torch.allclose(resized.reshape(2, 4, 4, 3), grid[:, i::3, j::3], atol=1e-3)
                   for i in range(3) for j in range(3))
    constant = torch.ones(1, 144, 3)
    torch.testing.assert_close(antialiased_resize(constant, 4), torch.ones(1, 16, 3))


def test_moment_preserving_rotation_keeps_mean_and_covariance_but_moves_tokens() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 6, generator=gen, dtype=torch.float64) @ torch.randn(6, 6, generator=gen,
                                                                               dtype=torch.float64)
    z = z + 3.0
    rotate = moment_preserving_rotation(z, torch.Generator().manual_seed(1))
    out = rotate(z)
    torch.testing.assert_close(out.mean(0), z.mean(0))
    torch.testing.assert_close(torch.cov(out.T), torch.cov(z.T))
    assert (out - z).norm() > 0.5 * (z - z.mean(0)).norm()


def test_seed_summary_means_and_sample_std_of_nested_numbers() -> None:
    mean, std = seed_summary([{"a": {"r2": 1.0}, "n": 5, "s": "x"}, {"a": {"r2": 3.0}, "n": 5, "s": "y"}])
    assert mean == {"a": {"r2": 2.0}, "n": 5, "s": "x"}
    assert std["a"]["r2"] == pytest.approx(2**0.5) and std["n"] == 0.0


def test_compare_calls_a_difference_only_beyond_two_std() -> None:
    a = {"x": 1.0, "std": {"x": 0.1}}
    assert compare(a, {"x": 0.9}, ("x",), higher=True)[1] == "none"
    assert compare(a, {"x": 0.7}, ("x",), higher=True)[1] == "better"
    assert compare(a, {"x": 0.7}, ("x",), higher=False)[1] == "worse"
    fd = {"frechet": 5.0}
    assert compare(fd, {"frechet": 5.5}, ("frechet",), higher=False, floor_std=0.3)[1] == "none"
    assert compare(fd, {"frechet": 5.7}, ("frechet",), higher=False, floor_std=0.3)[1] == "better"


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


TINY_PROBES = replace(ProbeSettings(), reader_clusters=6, reader_fit_tokens=2000, reader_kmeans_iters=3,
                      reader_steps=5, position_width=16, position_heads=2, position_steps=3,
                      position_batch_size=4, position_queries=16, head_steps=3,
                      frechet_samples_per_image=4, frechet_draws=3, swd_projections=8)


def tiny_config(**overrides):
    return quick_config(recipe_changes=SMALL_RECIPE, probe=TINY_PROBES, llm_text_tokens=4,
                        timing_images=2, timing_repeats=1, **overrides)


def test_benchmark_smoke_on_generated_tokens(tmp_path) -> None:
    features = synthetic_features(24, 8, grid_size=24, dim=16)
    config = tiny_config(output_grid_sizes=(12, 6), num_seeds=2,
                         methods=(*DEFAULT_METHODS, "toconv-recon", "unshuffle-linear"))
    report = run_benchmark(features, config, encoder_name=None, log=lambda _: None)
    out = write_report(report, tmp_path / "report")
    data = json.loads((out / "results.json").read_text())
    methods = {"avg-pool", "bilinear", "tome", "keep-center", "toconv-init", "toconv-rf", "toconv-recon",
               "unshuffle-linear", "control-rotated", "control-shuffled"}
    seeded = {"toconv-init", "toconv-rf", "toconv-recon", "unshuffle-linear"}
    for size, tokens in (("12", 144), ("6", 36)):
        block = data["sizes"][size]
        assert set(block["methods"]) == methods
        assert block["reference"]["frechet_draw_std"] > 0
        for name, m in block["methods"].items():
            assert m["tokens"] == tokens
            assert m["information"]["r2"] <= 1.0 and m["frechet"] >= -1e-6
            assert m["information_linear"]["r2"] <= 1.0 and 0 <= m["reader"]["rf_accuracy"] <= 1
            assert 0 <= m["position_reader"]["accuracy"] <= 1
            assert (set(m.get("seeds", {})) == {"0", "1"}) == (name in seeded)
        rf = block["methods"]["toconv-rf"]
        seed_r2 = [rf["seeds"][s]["information"]["r2"] for s in ("0", "1")]
        assert rf["information"]["r2"] == pytest.approx(sum(seed_r2) / 2)
        assert rf["std"]["information"]["r2"] == pytest.approx(abs(seed_r2[0] - seed_r2[1]) / 2**0.5)
        # shuffling the positions destroys what a grid probe can rebuild
        assert block["methods"]["control-shuffled"]["information"]["r2"] < rf["information"]["r2"] - 0.5
    assert [r["image_tokens"] for r in data["llm_prefill"]["rows"]] == [576, 144, 36]
    text = (out / "report.md").read_text()
    assert "toconv-rf" in text and "| 24→6 |" in text and "Quick run" in text
    assert "* Negative controls:" in text and "| 24→12 | toconv-rf | 1 |" in text
    assert {p.name for p in out.glob("*.png")} == {"info_kept.png", "readers.png", "distribution.png",
                                                    "plug_in.png", "tradeoff.png"}


def test_checkpoints_are_scored_as_extra_rows_at_their_own_size(tmp_path) -> None:
    features = synthetic_features(24, 8, grid_size=16, dim=16)
    run_dir = tmp_path / "runs" / "mine"
    run_dir.mkdir(parents=True)
    TokenCompressor(16, 4, hidden_dim=16).save_pretrained(run_dir / "latest.safetensors")
    checkpoints = load_checkpoints([run_dir / "latest.safetensors"], features)
    report = run_benchmark(features, tiny_config(output_grid_sizes=(8,), num_seeds=1,
                                                 methods=("avg-pool", "toconv-rf")),
                           encoder_name=None, log=lambda _: None, checkpoints=checkpoints)
    assert list(report["sizes"]) == ["8", "4"]
    block = report["sizes"]["4"]
    assert block["geometry"]["input_grid_size"] == 16 and "mine/latest" in block["methods"]
    row = block["methods"]["mine/latest"]
    # an average-pooling-initialised checkpoint at 16→4 is exact 4×4 average pooling
    assert row["information_linear"]["r2"] == pytest.approx(block["methods"]["avg-pool"]["information_linear"]["r2"])
    assert row["information"]["r2"] == pytest.approx(block["methods"]["avg-pool"]["information"]["r2"])
    assert row["source"] == str(run_dir / "latest.safetensors")
    TokenCompressor(24, 4, hidden_dim=16).save_pretrained(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="reads a 24x24 grid of width 16, but the benchmark's tokens are a 16x16"):
        load_checkpoints([tmp_path / "other.safetensors"], features)
