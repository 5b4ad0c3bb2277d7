"""benchmarks/reader_check.py: the readings it takes and the table it prints, on generated tokens."""

from __future__ import annotations

from dataclasses import replace

import pytest

from toconv.bench.data import synthetic_features
from toconv.bench.runner import Instrument, bootstrap_images
from toconv.metrics import ProbeSettings


def test_readings_of_every_method_and_the_full_grid(repo_script) -> None:
    check = repo_script("benchmarks/reader_check.py")
    features = synthetic_features(24, 8, grid_size=24, dim=16)
    settings = replace(ProbeSettings(), reader_clusters=8, reader_steps=20, mlp_steps=20, reader_kmeans_iters=5,
                       trained_width=16, trained_heads=2, trained_layers=1, trained_steps=20)
    inst = Instrument.fit(features, settings, 0)
    part = check.read_size(features, 6, inst, ["avg-pool", "blend-pool", "toconv-init"], settings, log=lambda _: None)
    identity = check.read_identity(features, inst, settings, log=lambda _: None)
    for readings in (*part.values(), identity):
        assert list(readings) == list(check.READINGS)
        assert all(stats["count"].tolist() == [576.0] * 8 for stats in readings.values())
    # at token width 16 the default start pins every direction: it is the blend, read alike
    for reading in check.READINGS:
        assert part["toconv-init"][reading]["correct"].tolist() == pytest.approx(
            part["blend-pool"][reading]["correct"].tolist())
    # the frozen reader on the real tokens themselves: its own token accuracy
    assert float(identity["decoded"]["correct"].sum() / 4608) == pytest.approx(inst.mlp.token_accuracy(features.val))
    lines = check.table({6: [part]}, bootstrap_images(8, 3, 0), [identity])
    assert lines[0] == "| size | method | trained | trained+locality | decoded |"
    assert lines[2].startswith("| 24→24 | identity (576 tokens) | ")
    assert lines[3].startswith("| 24→6 | avg-pool | ") and "noise" not in lines[3]
    assert lines[5].startswith("| 24→6 | toconv-init | ")
    assert sum(lines[5].count(f" {word})") for word in ("better", "worse", "within noise")) == 3  # one per reading


@pytest.mark.parametrize(("args", "message"), [
    (["--methods", "no-such-method"], "unknown methods ['no-such-method']"),
    (["--sizes", "5"], "grid cells need an output side that divides the input side, got 24 -> 5"),
])
def test_bad_input_is_a_usage_error_before_any_worker_starts(repo_script, tmp_path, monkeypatch, capsys,
                                                             args: list[str], message: str) -> None:
    check = repo_script("benchmarks/reader_check.py")
    features = synthetic_features(4, 2, grid_size=24, dim=8)
    monkeypatch.setattr(check, "load_cache", lambda _: features)
    monkeypatch.setattr("sys.argv", ["reader_check.py", "--cache", str(tmp_path), *args])
    with pytest.raises(SystemExit):
        check.main()
    assert message in capsys.readouterr().err
