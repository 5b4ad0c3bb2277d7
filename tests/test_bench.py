"""Smoke test of the benchmark on generated tokens, and checks of its building blocks."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from einops import rearrange

from toconv.bench.__main__ import main as bench_main
from toconv.bench.config import DEFAULT_METHODS, BenchConfig, quick_config
from toconv.bench.data import synthetic_features
from toconv.bench.methods import MethodContext, build_method, moment_preserving_rotation
from toconv.bench.reducers import (
    CellSelector,
    antialiased_resize,
    average_pool,
    mode_pool,
    rf_center_indices,
    tome_merge,
    train_selection,
)
from toconv.bench.report import write_report
from toconv.bench.runner import (
    FrechetSets,
    load_checkpoints,
    method_tokens,
    paired_verdict,
    run_benchmark,
    summary,
)
from toconv.bench.workers import Workers
from toconv.geometry import RFGeometry, resolve_geometry
from toconv.metrics import ProbeSettings, cell_tokens, frechet_distance
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


@pytest.mark.parametrize("output", [12, 8, 6])
def test_blend_pool_averages_the_centre_token_and_the_cell_mean(output: int) -> None:
    x = torch.randn(2, 576, 5)
    ctx = MethodContext(x, resolve_geometry(24, output), quick_config(), lambda _: None)
    centre = x[:, rf_center_indices(ctx.rf)]
    blend = build_method("blend-pool", ctx).compress(x)
    torch.testing.assert_close(blend, (centre + average_pool(x, output)) / 2)
    assert not torch.allclose(blend, average_pool(x, output), atol=1e-2)


@pytest.mark.parametrize("output", [12, 8, 6])
def test_mode_pool_keeps_the_cells_dominant_content_not_its_mean(output: int) -> None:
    """Cells of two contents, one on most of the cell's tokens: the mode is (near) that content,
    the mean lies between; a flat temperature gives the mean back."""
    gen = torch.Generator().manual_seed(0)
    side = 24 // output
    a, b = torch.randn(2, 1, 1, 16, generator=gen).unbind(0)
    minority = torch.zeros(side * side, dtype=torch.bool)
    minority[: side * side // 3] = True  # a third of every cell holds the other content
    cells = torch.where(minority[None, None, :, None], b, a) + 0.05 * torch.randn(1, output**2, side**2, 16,
                                                                                   generator=gen)
    x = rearrange(cells, "b (i j) (p q) c -> b (i p j q) c", i=output, p=side)
    mode = build_method("mode-pool", MethodContext(x, resolve_geometry(24, output), quick_config(),
                                                   lambda _: None)).compress(x)
    assert float((mode - a[0]).norm(dim=-1).max()) < 0.1 * float(a.norm())
    mean = average_pool(x, output)
    assert float((mean - a[0]).norm(dim=-1).min()) > 0.2 * float((a - b).norm())
    torch.testing.assert_close(mode_pool(x, output, temperature=1e6), mean, atol=1e-5, rtol=1e-4)


def cells_of_two_contents(n: int, out: int, dim: int, minority: float, seed: int = 0) -> torch.Tensor:
    """(n, 576, dim) tokens whose every cell holds two contents: one on about ``minority`` of its
    tokens, the other on the rest, with a little noise."""
    gen = torch.Generator().manual_seed(seed)
    side = 24 // out
    contents = torch.randn(n, out * out, 2, dim, generator=gen) * 2
    other = torch.rand(n, out * out, side * side, generator=gen) < minority
    cells = torch.where(other[..., None], contents[:, :, 1:2], contents[:, :, :1])
    cells = cells + 0.1 * torch.randn(cells.shape, generator=gen)
    return rearrange(cells, "b (i j) (p q) c -> b (i p j q) c", i=out, p=side)


def test_cell_selector_starts_as_average_pooling() -> None:
    x = torch.randn(3, 576, 6) + 2
    selector = CellSelector(torch.zeros(6), torch.ones(6), 8)
    torch.testing.assert_close(selector(x), average_pool(x, 8))


def test_selection_moves_towards_a_real_token_only_with_the_critic() -> None:
    """The central signal alone keeps the cell mean (its optimum); with the RF critic the chosen
    token moves towards one of the cell's own tokens."""
    x = cells_of_two_contents(48, 6, 8, minority=0.3)

    def nearest_real(z: torch.Tensor) -> float:
        return float((cell_tokens(x, 6) - z[:, :, None]).norm(dim=-1).min(dim=-1).values.mean())

    mean = nearest_real(average_pool(x, 6))
    central, both = (train_selection(x, 6, weight, steps=100, batch_size=8)[0] for weight in (0.0, 0.1))
    with torch.no_grad():
        central, both = nearest_real(central(x)), nearest_real(both(x))
    assert central == pytest.approx(mean, rel=1e-3)
    assert both < 0.95 * mean


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


def test_moment_preserving_rotation_keeps_the_moments_of_what_it_rotates() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 6, generator=gen, dtype=torch.float64) @ torch.randn(6, 6, generator=gen,
                                                                               dtype=torch.float64)
    out = moment_preserving_rotation(z + 3.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.mean(0), (z + 3.0).mean(0))
    torch.testing.assert_close(torch.cov(out.T), torch.cov(z.T))
    assert (out - z - 3.0).norm() > 0.5 * (z - z.mean(0)).norm()


def test_rotated_control_keeps_the_validation_moments_of_toconv_rf() -> None:
    features = synthetic_features(24, 12, grid_size=24, dim=16)
    config = tiny_config(output_grid_sizes=(8,))
    ctx = MethodContext(features.train, resolve_geometry(24, 8), config, lambda _: None, seed=0)
    rf, rotated = build_method("toconv-rf", ctx), build_method("control-rotated", ctx)
    z, _ = method_tokens(rf, features.val)
    r, _ = method_tokens(rotated, features.val)
    flat_z, flat_r = z.flatten(0, 1).double(), r.flatten(0, 1).double()
    torch.testing.assert_close(flat_r.mean(0), flat_z.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cov(flat_r.T), torch.cov(flat_z.T), atol=1e-4, rtol=1e-3)
    assert (r - z).norm() > 0.5 * (z - z.mean((0, 1))).norm()


def test_summary_and_paired_verdict_by_hand() -> None:
    assert summary([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "runs": [1.0, 2.0, 3.0]}
    assert summary([1.0, None])["mean"] is None
    # differences 0.25, 0.75, 0.5: mean 0.5, std 0.25 → exactly 2 std is still within noise
    a, b = [1.25, 1.75, 1.5], [1.0, 1.0, 1.0]
    v = paired_verdict(a, b, higher=True)
    assert v["diff"] == 0.5 and v["std"] == 0.25
    assert v["verdict"] == "within noise"
    # differences 0.5, 0.6, 0.7: mean 0.6, std 0.1 → better (higher) or worse (lower is better)
    assert paired_verdict([1.5, 1.6, 1.7], b, higher=True)["verdict"] == "better"
    assert paired_verdict([1.5, 1.6, 1.7], b, higher=False)["verdict"] == "worse"
    # paired, not pooled: a constant offset is beyond noise however much both vary between runs
    assert paired_verdict([5.0, 1.0, 9.0], [4.9, 0.9, 8.9], higher=True)["verdict"] == "better"
    assert paired_verdict([1.0, None], [1.0, 2.0], higher=True)["verdict"] == "n/a"


def test_frechet_zero_for_same_sample_and_grows_with_shift() -> None:
    a = torch.randn(500, 4)
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, a + 1.0) > 3.9


def test_frechet_sets_are_disjoint_real_tokens_away_from_the_rf_centres() -> None:
    val = torch.arange(4 * 144, dtype=torch.float32).reshape(4, 144, 1)  # every token unique
    centres = rf_center_indices(RFGeometry.from_conv(resolve_geometry(12, 6)))
    sets = FrechetSets.draw(val, 36, centres, 1.0, seed=0)
    for image in range(4):
        ref, floor = set(sets.reference[image, :, 0].tolist()), set(sets.floor[image, :, 0].tolist())
        own = set(val[image, :, 0].tolist())
        kept = set(val[image, centres, 0].tolist())
        assert len(ref) == len(floor) == 36 and not ref & floor
        assert ref | floor <= own - kept
    with pytest.raises(ValueError, match="real tokens per image outside"):
        FrechetSets.draw(val, 60, centres, 1.0, seed=0)


TINY_PROBES = replace(ProbeSettings(), reader_clusters=6, reader_fit_tokens=2000, reader_kmeans_iters=3,
                      reader_steps=5, mlp_width=16, mlp_steps=5, trained_width=16, trained_heads=2,
                      trained_layers=1, trained_steps=3, trained_batch_size=4, trained_queries=16,
                      frechet_tokens_per_dim=1)
SMALL_RECIPE = {"steps": 2, "batch_size": 4, "critic.width": 16, "decoder.width": 16}


def tiny_config(**overrides):
    settings = {"recipe_changes": SMALL_RECIPE, "probe": TINY_PROBES, "llm_text_tokens": 4, "workers": 1,
                "timing_images": 2, "timing_repeats": 1, "bootstrap_draws": 3}
    return quick_config(**{**settings, **overrides})


METRICS = ("information", "information_ceiling", "reader_linear", "reader_mlp", "reader_trained", "frechet")


def test_benchmark_smoke_on_generated_tokens(tmp_path) -> None:
    features = synthetic_features(24, 8, grid_size=24, dim=16)
    config = tiny_config(output_grid_sizes=(12, 6), num_seeds=2, methods=(*DEFAULT_METHODS, "tome"))
    report = run_benchmark(features, config, encoder_name=None, log=lambda _: None)
    out = write_report(report, tmp_path / "report")
    data = json.loads((out / "results.json").read_text())
    for size, tokens in (("12", 144), ("6", 36)):
        block = data["sizes"][size]
        assert set(block["methods"]) == {*DEFAULT_METHODS, "tome"}
        assert [(r["training_seed"], r["bootstrap"]) for r in block["runs"]] == [
            (s, b) for s in (0, 1) for b in range(3)]
        for m in block["methods"].values():
            assert m["tokens"] == tokens
            for key in METRICS:
                assert set(m[key]) == {"mean", "std", "runs"} and len(m[key]["runs"]) == 6
                assert m[key]["mean"] == pytest.approx(statistics.fmean(m[key]["runs"]))
        methods = block["methods"]
        # shuffling the positions destroys what the grid probe can rebuild
        assert (methods["control-shuffled"]["information"]["mean"]
                < methods["toconv-rf"]["information"]["mean"] - 0.5)
        # untrained seeded starts differ between runs, fixed methods only through the bootstrap
        pool = methods["avg-pool"]["information"]["runs"]
        assert pool[:3] != pool[3:] and len(set(pool)) > 1
        verdicts = {(v["method"], v["against"], v["metric"]): v for v in block["verdicts"]}
        assert verdicts[("control-shuffled", "toconv-rf", "information")]["verdict"] == "worse"
        assert ("toconv-rf", "blend-pool", "reader_mlp") in verdicts
    assert [r["image_tokens"] for r in data["llm_prefill"]["rows"]] == [576, 144, 36]
    text = (out / "report.md").read_text()
    assert "| toconv-rf | 144 |" in text and "## 24→6" in text and "Quick run" in text
    assert "**Targets:**" in text and "(worse)" in text
    assert f"runs in 1 process of {torch.get_num_threads()} thread" in text
    assert {p.name for p in out.glob("*.png")} == {"front.png", "frechet.png"}


def test_worker_processes_give_the_same_figures_as_one_process() -> None:
    features = synthetic_features(16, 6, grid_size=16, dim=16)
    config = tiny_config(output_grid_sizes=(8, 4), num_seeds=2,
                         methods=("avg-pool", "toconv-init", "toconv-rf", "control-shuffled"))
    lines: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic here as in each one-thread worker
    try:
        alone = run_benchmark(features, replace(config, workers=1), encoder_name=None, log=lambda _: None)
        split = run_benchmark(features, replace(config, workers=2), encoder_name=None, log=lines.append)
    finally:
        torch.set_num_threads(threads)
    assert split["environment"]["workers"] == 2 and split["environment"]["threads_per_worker"] == 1
    for size in ("8", "4"):
        a, b = alone["sizes"][size], split["sizes"][size]
        assert a["runs"] == b["runs"] and a["verdicts"] == b["verdicts"]
        for name, row in a["methods"].items():
            for key in METRICS:
                assert row[key]["runs"] == b["methods"][name][key]["runs"], (size, name, key)
    # the workers' progress lines reach the caller's log
    assert any("toconv-rf run 1" in line for line in lines)
    assert any("instrument at seed 1 fitted" in line for line in lines)


def test_frechet_with_too_few_tokens_is_not_reported(tmp_path) -> None:
    features = synthetic_features(24, 4, grid_size=24, dim=16)
    config = tiny_config(output_grid_sizes=(6,), num_seeds=1, methods=("avg-pool",),
                         probe=replace(TINY_PROBES, frechet_tokens_per_dim=10))
    report = run_benchmark(features, config, encoder_name=None, log=lambda _: None)
    block = report["sizes"]["6"]
    assert block["frechet_tokens_per_set"] == 4 * 36 and not block["frechet_enough_tokens"]
    assert block["methods"]["avg-pool"]["frechet"]["mean"] is None and block["floor"]["mean"] is None
    text = (write_report(report, tmp_path / "r") / "report.md").read_text()
    assert "too few tokens" in text


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
    pool = block["methods"]["avg-pool"]
    for key in ("information", "reader_linear", "reader_mlp"):
        assert row[key]["runs"] == pytest.approx(pool[key]["runs"])
    assert row["source"] == str(run_dir / "latest.safetensors")
    TokenCompressor(24, 4, hidden_dim=16).save_pretrained(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="reads a 24x24 grid of width 16, but the benchmark's tokens are a 16x16"):
        load_checkpoints([tmp_path / "other.safetensors"], features)


@pytest.mark.parametrize("output", [8, 6])
def test_pin_sweep_rows_run_from_the_pca_start_to_average_pooling(output: int) -> None:
    features = synthetic_features(40, 6, grid_size=24, dim=16)
    ctx = MethodContext(features.train, resolve_geometry(24, output), tiny_config(output_grid_sizes=(output,)),
                        lambda _: None, seed=0)
    pooled = average_pool(features.val, output)
    for name in ("toconv-pin-384", "toconv-pin-16"):  # min(p, C=16) pins every direction
        torch.testing.assert_close(build_method(name, ctx).compress(features.val), pooled, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(build_method("toconv-pin-0", ctx).compress(features.val), pooled, atol=1e-2)


def _double(x: int, log: Callable[[str], None]) -> int:
    log(f"doubling {x}")
    return 2 * x


def _exit_process(code: int, log: Callable[[str], None]) -> None:
    os._exit(code)  # what the kernel's OOM killer leaves behind: no exception, no result


def test_a_worker_process_that_dies_is_named_with_what_to_do() -> None:
    lines: list[str] = []
    with Workers(2, log=lines.append, threads=1) as workers:
        assert workers.map(_double, [(1,), (2,), (3,)]) == [2, 4, 6]
        with pytest.raises(RuntimeError, match=r"worker process died while running _exit_process.*--workers 1"):
            workers.map(_exit_process, [(1,), (1,)])
    assert sorted(lines) == ["doubling 1", "doubling 2", "doubling 3"]


def test_zero_workers_is_a_usage_error_before_any_data_is_read(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"workers: expected at least 1 worker process, got 0"):
        BenchConfig(workers=0)
    missing = tmp_path / "no-cache"  # never read: the settings are checked first
    with pytest.raises(SystemExit, match=r"python -m toconv.bench: error: workers: expected at least 1"):
        bench_main(["--cache", str(missing), "--workers", "0"])


def test_a_size_that_does_not_divide_the_grid_is_a_usage_error_before_any_fit() -> None:
    with pytest.raises(SystemExit, match="python -m toconv.bench: error: grid cells need an output side "
                                         "that divides the input side, got 24 -> 5"):
        bench_main(["--synthetic", "--sizes", "5"])


def test_zero_seeds_is_a_usage_error_not_the_default(tmp_path) -> None:
    with pytest.raises(ValueError, match="bootstrap_draws: expected at least 1 draw, got 0"):
        BenchConfig(bootstrap_draws=0)
    with pytest.raises(SystemExit, match="python -m toconv.bench: error: num_seeds: expected at least 1 seed, got 0"):
        bench_main(["--cache", str(tmp_path / "no-cache"), "--seeds", "0"])
