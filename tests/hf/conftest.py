"""Fixtures for the tests of toconv.integrations.hf (tiny random LLaVA models, no hub access).

Each test module starts with ``hf_tiny.require_transformers()``, so the folder skips cleanly
where transformers is missing or older than 4.49 (the LLaVA stage of CI pins 4.36.2).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_llava_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stock tiny models saved to folders with their image processors: ``llava`` (CLIP, layer -2,
    'default'), ``llava_full_layers`` (CLIP, layers [-2, -1], 'full'), ``llava_next`` and
    ``llava_onevision`` (SigLIP, 'full'). The whole processor is saved where transformers can
    (transformers 5 saves a OneVision processor only with torchvision)."""
    import hf_tiny

    hf_tiny.require_transformers()
    root = tmp_path_factory.mktemp("tiny-llava-hf")
    specs = {"llava": dict(kind="llava"),
             "llava_full_layers": dict(kind="llava", strategy="full", layer=[-2, -1]),
             "llava_next": dict(kind="llava_next"),
             "llava_onevision": dict(kind="llava_onevision")}
    dirs = {}
    for name, spec in specs.items():
        folder = root / name
        hf_tiny.model(**spec).save_pretrained(folder)
        processor = hf_tiny.processor(spec["kind"], strategy=spec.get("strategy"))
        processor.image_processor.save_pretrained(folder)
        if spec["kind"] != "llava_onevision" or hf_tiny.has_video_processor():
            processor.save_pretrained(folder)
        dirs[name] = folder
    return dirs


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run these small models on one thread: on a shared 2-core machine two OpenMP threads wait
    on each other (several times slower); the previous setting is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
