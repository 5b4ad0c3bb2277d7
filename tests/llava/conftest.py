"""Fixtures for the LLaVA integration tests (they skip when llava-torch is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def clip224(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random CLIP with a 16×16 patch grid (224 px, patch 14)."""
    pytest.importorskip("transformers")
    from llava_helpers import save_clip

    return save_clip(tmp_path_factory.mktemp("tiny-clip-224"), image_size=224)


@pytest.fixture(scope="session")
def ckpt_24to12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """toconv checkpoint 24→12 at the tiny CLIP width."""
    from llava_helpers import save_compressor

    return save_compressor(tmp_path_factory.mktemp("ckpt") / "24to12.safetensors", 24, 12)


@pytest.fixture(scope="session")
def patched() -> None:
    """``llava_patch.apply()`` (idempotent; patches the process-wide llava modules)."""
    pytest.importorskip("llava.model.llava_arch", reason="llava-torch is not installed "
                        "(pip install '.[llava]', Python <= 3.11)")
    import llava_patch

    llava_patch.apply()
