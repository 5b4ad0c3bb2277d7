"""The README's Hugging Face snippet, run as written on a tiny random LLaVA built from a config."""

from __future__ import annotations

import re
from pathlib import Path

import hf_tiny
import torch

hf_tiny.require_transformers()

from toconv.integrations import hf  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- ci: hf snippet"


def readme_block(marker: str) -> str:
    """The fenced code block right after the HTML comment starting with ``marker``."""
    text = README.read_text()
    found = re.search(re.escape(marker) + r".*?-->\n```\w*\n(.*?)\n```", text, re.DOTALL)
    assert found is not None, f"README.md has no code block after {marker!r}"
    return found.group(1)


def test_the_readme_hf_snippet_runs_on_a_tiny_model(tmp_path: Path) -> None:
    model_dir, checkpoint = tmp_path / "llava", tmp_path / "best.safetensors"
    hf_tiny.model("llava").save_pretrained(model_dir)
    hf_tiny.processor("llava").save_pretrained(model_dir)
    compressor = hf_tiny.compressor(hf_tiny.GRID["llava"], 12)
    compressor.save_pretrained(checkpoint)
    hf_tiny.image(90, 60).save(tmp_path / "photo.jpg")
    # the README's placeholders -> the tiny model's files (each must still be in the snippet)
    paths = {"models/llava-1.5-7b-hf": model_dir, "runs/llava-1.5/best.safetensors": checkpoint,
             "photo.jpg": tmp_path / "photo.jpg", "llava-1.5-7b-toconv12": tmp_path / "saved"}
    code = readme_block(MARKER)
    for placeholder, path in paths.items():
        assert f'"{placeholder}"' in code, f"the README snippet lost {placeholder!r}"
        code = code.replace(f'"{placeholder}"', repr(str(path)))
    namespace: dict = {}
    with torch.no_grad():
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    assert int((namespace["inputs"]["input_ids"] == hf_tiny.IMAGE_TOKEN_ID).sum()) == 12 * 12
    assert namespace["out"].shape[1] > namespace["inputs"]["input_ids"].shape[1]
    loaded = hf.compressed_projector(namespace["model"]).compressor
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in compressor.state_dict().items())
    assert (tmp_path / "saved" / hf.COMPRESSOR_FILE).is_file()
