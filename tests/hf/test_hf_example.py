"""examples/hf_llava_inference.py runs offline on a local folder: stock + checkpoint, then saved."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import hf_tiny
import pytest

transformers = hf_tiny.require_transformers()

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hf_llava_inference.py"


def _example():
    spec = importlib.util.spec_from_file_location("hf_llava_inference", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["llava", "llava_next"])
def test_example_compresses_generates_and_saves(tiny_llava_dirs: dict, tmp_path: Path,
                                                capsys: pytest.CaptureFixture, name: str) -> None:
    checkpoint = hf_tiny.compressor(24, 8).save_pretrained(tmp_path / "24to8.safetensors")
    image = tmp_path / "photo.png"
    hf_tiny.image(90, 60).save(image)
    example = _example()
    args = ["--model", str(tiny_llava_dirs[name]), "--image", str(image), "--device", "cpu",
            "--max-new-tokens", "4", "--prompt", "describe the photo"]
    example.main([*args, "--compressor", str(checkpoint), "--save", str(tmp_path / "saved")])
    first = capsys.readouterr().out
    assert "8x8 tokens per tile" in first and "(stock model: " in first
    if name == "llava":
        assert "image tokens in the prompt: 64 (stock model: 576)" in first
    example.main(["--model", str(tmp_path / "saved"), *args[2:]])
    second = capsys.readouterr().out
    assert first.splitlines()[2] == second.splitlines()[2]  # the same answer after reloading
