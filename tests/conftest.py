"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Real photos for tests and benchmarks, beside the repository (absent on users' machines).
IMAGENET_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample-800"


@pytest.fixture
def imagenet_sample() -> Path:
    """Folder of 800 real ImageNet photos; skips the test when it is not there."""
    if not IMAGENET_SAMPLE.is_dir():
        pytest.skip(f"real photos not found at {IMAGENET_SAMPLE} (../shared/data beside the repo)")
    return IMAGENET_SAMPLE
