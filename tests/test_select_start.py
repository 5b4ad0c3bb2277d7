"""benchmarks/select_start.py: the rows it reads, on generated tokens."""

from __future__ import annotations

from dataclasses import replace

import pytest

from toconv.bench.data import synthetic_features
from toconv.metrics import ProbeSettings


def test_rows_read_every_start_and_a_fully_pinned_start_reads_as_its_token(repo_script) -> None:
    select = repo_script("benchmarks/select_start.py")
    train = synthetic_features(30, 1, grid_size=24, dim=16).train
    settings = replace(ProbeSettings(), reader_clusters=8, reader_steps=20, mlp_steps=20, reader_kmeans_iters=5)
    rows = select.select_rows(train, 24, [0, 1], [8], [64], settings)
    by_name = {row["method"]: row["scores"] for row in rows}
    assert list(by_name)[:5] == ["avg-pool", "blend w=0.25", "blend w=0.5", "blend w=0.75", "keep-center"]
    assert all(len(scores) == 2 and all(0 <= a <= 1 for pair in scores for a in pair) for scores in by_name.values())
    # at token width 16, p = 64 pins every direction: each start is its pinned token as a reducer
    for start, reducer in (("start mean, p=64", "avg-pool"), ("start center, p=64", "keep-center"),
                           ("start blend, p=64", "blend w=0.5")):
        assert [a for pair in by_name[start] for a in pair] == pytest.approx(
            [a for pair in by_name[reducer] for a in pair], abs=1e-6)
    assert by_name["avg-pool"] != by_name["keep-center"]
    with pytest.raises(ValueError, match="expected 1 to 29 of the 30 training images, got 30"):
        select.select_rows(train, 30, [0], [8], [64], settings)
