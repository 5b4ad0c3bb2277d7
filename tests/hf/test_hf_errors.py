"""compress_llava refuses what it cannot do, naming both sides, and changes nothing then."""

from __future__ import annotations

import hf_tiny
import pytest

transformers = hf_tiny.require_transformers()

from toconv import TokenCompressor  # noqa: E402
from toconv.integrations import hf  # noqa: E402


def _unchanged(model, processor) -> None:
    assert hf.compressed_projector(model) is None and processor.patch_size == 2
    assert not hasattr(model.config, "toconv")


def test_grid_mismatch_names_both_grids() -> None:
    model, processor = hf_tiny.model("llava"), hf_tiny.processor("llava")
    with pytest.raises(ValueError, match=r"reads a 16x16 patch grid.*image_size=48, patch_size=2\) "
                                         r"gives 24x24"):
        hf.compress_llava(model, hf_tiny.compressor(16, 8), processor)
    _unchanged(model, processor)


def test_width_mismatch_names_both_widths() -> None:
    model, processor = hf_tiny.model("llava"), hf_tiny.processor("llava")
    with pytest.raises(ValueError, match=r"width 64, but the projector .* reads width 32"):
        hf.compress_llava(model, hf_tiny.compressor(24, 12, width=64), processor)
    wider = TokenCompressor(24, 12, hidden_dim=32, out_dim=16, init="random")
    with pytest.raises(ValueError, match=r"outputs width 16, but the projector .* reads width 32"):
        hf.compress_llava(model, wider, processor)
    _unchanged(model, processor)


def test_side_the_patch_arithmetic_cannot_express() -> None:
    """24 -> 7 is a valid geometry, but no patch size p gives 48 // p == 7."""
    model, processor = hf_tiny.model("llava"), hf_tiny.processor("llava")
    with pytest.raises(ValueError, match=r"7x7 output grid cannot be expressed.*48 // 6 = 8"):
        hf.compress_llava(model, hf_tiny.compressor(24, 7), processor)
    _unchanged(model, processor)


def test_compressing_twice() -> None:
    model, processor = hf_tiny.model("llava"), hf_tiny.processor("llava")
    first = hf_tiny.compressor(24, 12)
    hf.compress_llava(model, first, processor)
    with pytest.raises(ValueError, match=r"already compressed by TokenCompressor \[24to12\].*"
                                         r"again with TokenCompressor \[24to8\]"):
        hf.compress_llava(model, hf_tiny.compressor(24, 8), processor)
    assert hf.compressed_projector(model).compressor is first and processor.patch_size == 4


def test_processor_of_another_model() -> None:
    model = hf_tiny.model("llava")
    with pytest.raises(ValueError, match="needs a LlavaProcessor, got LlavaNextProcessor"):
        hf.compress_llava(model, hf_tiny.compressor(24, 12), hf_tiny.processor("llava_next"))
    processor = hf_tiny.processor("llava")
    processor.patch_size = 3
    with pytest.raises(ValueError, match=r"patch_size=3, but the model expects patch_size=2 .*"
                                         r"or patch_size=4"):
        hf.compress_llava(model, hf_tiny.compressor(24, 12), processor)
    assert hf.compressed_projector(model) is None


def test_siglip_tower_with_default_strategy() -> None:
    model = hf_tiny.model("llava", tower="siglip", strategy="default")
    with pytest.raises(ValueError, match=r"siglip_vision_model tower has no CLS.*728 tokens"):
        hf.compress_llava(model, hf_tiny.compressor(27, 9))


def test_cls_token_compressor_and_non_llava_models() -> None:
    model = hf_tiny.model("llava")
    with_cls = TokenCompressor(24, 12, hidden_dim=32, cls_token=True)
    with pytest.raises(ValueError, match="cls_token=False"):
        hf.compress_llava(model, with_cls)
    tower = hf._owner(model).vision_tower
    with pytest.raises(ValueError, match="expected a LLaVA model"):
        hf.compress_llava(tower, hf_tiny.compressor(24, 12))


def test_remove_or_save_an_uncompressed_model(tmp_path) -> None:
    model = hf_tiny.model("llava")
    with pytest.raises(ValueError, match="is not compressed"):
        hf.remove_compression(model)
    with pytest.raises(ValueError, match="is not compressed"):
        hf.save_pretrained(model, tmp_path)
