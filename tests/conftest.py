"""Shared fixtures."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

#: Devices the device-agnostic tests run on: the CPU, plus CUDA where there is one.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def fresh_accelerate_state() -> None:
    """Start from a clean accelerate state: another module of the same pytest process (LLaVA's
    training script in tests/llava) may have set its process-wide mixed precision, which a new
    ``Accelerator`` cannot change (accelerate's own tests reset it the same way)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def repo_script() -> Callable[[str], ModuleType]:
    """Loads a script of the repository (``benchmarks/NAME.py``, say) as a module, by path."""

    def load(relative: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def photos() -> Path:
    """The 160 real photos shipped in the package (``toconv/photos/images``); never skips."""
    from toconv.data.photos import packaged_photos

    return packaged_photos()


def save_tiny_clip(
    path: Path, image_size: int = 336, patch_size: int = 14, hidden_size: int = 32
) -> Path:
    """Save a randomly initialised 2-layer ``CLIPVisionModel`` (with its image processor) to ``path``.

    The default geometry matches CLIP-L/336 (24×24 patch grid) at a tiny width.
    """
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=hidden_size,
    )
    torch.manual_seed(0)
    transformers.CLIPVisionModel(config).save_pretrained(path)
    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    transformers.CLIPImageProcessor(size=size, crop_size=crop).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding a tiny random CLIP vision tower with a 24×24 patch grid at 336 px."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip-336"))
