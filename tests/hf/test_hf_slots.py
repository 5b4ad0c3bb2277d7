"""compress_llava with a slots compressor: the processor counts K = output_grid_size² slots per
image (and tile), the model packs as many, and a saved folder loads the slots family back."""

from __future__ import annotations

from pathlib import Path

import hf_tiny
import pytest
import torch

transformers = hf_tiny.require_transformers()

from toconv.integrations import hf  # noqa: E402
from toconv.models import SlotCompressor  # noqa: E402


def _slots(kind: str) -> SlotCompressor:
    grid = hf_tiny.GRID[kind]
    torch.manual_seed(0)
    return SlotCompressor(grid, grid // 3, hidden_dim=32).eval()


@pytest.mark.parametrize("kind", hf_tiny.KINDS)
def test_processor_counts_the_slots_and_the_model_packs_them(kind: str) -> None:
    model, processor = hf_tiny.model(kind), hf_tiny.processor(kind)
    compressor = _slots(kind)
    hf.compress_llava(model, compressor, processor)
    k = compressor.num_slots
    if kind == "llava":
        batch = hf_tiny.inputs(processor, [hf_tiny.image(70, 130)])
        assert hf_tiny.count(batch) == k == model.config.image_seq_length
        x, y = hf_tiny.projector_io(model, batch)
        assert x.shape[1] == 24 * 24 and y.shape[1] == k
    else:
        tile = hf_tiny.tile_side(kind)
        batch = hf_tiny.inputs(processor, [hf_tiny.image(2 * tile, tile)])
        assert hf_tiny.packed_count(model, batch) == hf_tiny.count(batch) > k
    out = model.generate(**batch, max_new_tokens=2, min_new_tokens=2, do_sample=False)
    assert out.shape == (1, batch["input_ids"].shape[1] + 2)


def test_saved_folder_loads_the_slots_family(tmp_path: Path) -> None:
    model, processor = hf_tiny.model("llava"), hf_tiny.processor("llava")
    compressor = _slots("llava")
    hf.compress_llava(model, compressor, processor)
    hf.save_pretrained(model, tmp_path, processor)
    loaded, loaded_processor = hf.from_pretrained(tmp_path)
    restored = hf.compressed_projector(loaded).compressor
    assert isinstance(restored, SlotCompressor) and restored.config == compressor.config
    batch = hf_tiny.inputs(processor, [hf_tiny.image(64, 64)])
    again = hf_tiny.inputs(loaded_processor, [hf_tiny.image(64, 64)])
    assert torch.equal(batch["input_ids"], again["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**again).logits)
