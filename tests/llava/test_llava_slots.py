"""``use_token_compression`` with a slots checkpoint: the tower gives K slots, and a saved model
rebuilds the slots compressor with its own weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("llava.model.llava_arch", reason="llava-torch is not installed "
                    "(pip install '.[llava]', Python <= 3.11)")

import torch  # noqa: E402
from llava.constants import IMAGE_TOKEN_INDEX  # noqa: E402
from llava.model import LlavaLlamaForCausalLM  # noqa: E402
from llava_helpers import WIDTH, build_llava, images, llava_config  # noqa: E402

from toconv.models import SlotCompressor  # noqa: E402

pytestmark = pytest.mark.usefixtures("patched")


@pytest.fixture(scope="module")
def slots_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(2)
    return SlotCompressor(24, 8, hidden_dim=WIDTH).save_pretrained(
        tmp_path_factory.mktemp("slots") / "slots.safetensors")


def test_slots_model_forward_and_save_reload(tiny_clip_path: Path, slots_ckpt: Path,
                                             tmp_path: Path) -> None:
    config = llava_config(tiny_clip_path, use_token_compression=True, compression_input_size=24,
                          compression_output_size=8, compression_checkpoint=str(slots_ckpt))
    model = build_llava(config)
    tower = model.get_vision_tower()
    assert isinstance(tower.token_compressor, SlotCompressor) and tower.num_patches == 64
    ids = torch.tensor([[3, IMAGE_TOKEN_INDEX, 5, 6]])
    x = images(1, 336)
    with torch.no_grad():  # pretend the slots were finetuned: the saved weights must win
        tower.token_compressor.slots_init.mul_(1.5)
        logits = model(input_ids=ids, images=x).logits
    assert logits.shape == (1, 3 + 64, 128)
    model.save_pretrained(tmp_path / "full")
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert saved["use_token_compression"] is True

    reloaded = LlavaLlamaForCausalLM.from_pretrained(tmp_path / "full", low_cpu_mem_usage=True)
    reloaded.get_vision_tower().load_model()
    assert isinstance(reloaded.get_vision_tower().token_compressor, SlotCompressor)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(input_ids=ids, images=x).logits, logits)
