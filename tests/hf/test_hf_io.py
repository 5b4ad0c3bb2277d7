"""save_pretrained / from_pretrained: stock files plus the compressor, identical ids and logits;
a stock model with the compressed processor (or the reverse) fails loudly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import hf_tiny
import pytest
import torch

transformers = hf_tiny.require_transformers()

from toconv.integrations import hf  # noqa: E402

MISMATCH = "Image features and image tokens do not match"


def _saved(kind: str, folder: Path, n_out: int) -> tuple:
    """A compressed tiny model saved to ``folder``; returns (model, processor, compressor)."""
    model, processor = hf_tiny.model(kind), hf_tiny.processor(kind)
    compressor = hf_tiny.compressor(hf_tiny.GRID[kind], n_out)
    hf.compress_llava(model, compressor, processor)
    saves_processor = kind != "llava_onevision" or hf_tiny.has_video_processor()
    hf.save_pretrained(model, folder, processor if saves_processor else None)
    return model, processor, compressor


@pytest.mark.parametrize(("kind", "n_out"), [("llava", 8), ("llava_next", 12),
                                             ("llava_onevision", 14)])
def test_save_load_gives_identical_ids_and_logits(tmp_path: Path, kind: str, n_out: int) -> None:
    model, processor, compressor = _saved(kind, tmp_path, n_out)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["toconv"]["compressor"] == compressor.config.to_dict()
    assert (tmp_path / hf.COMPRESSOR_FILE).is_file()
    with_processor = (tmp_path / "processor_config.json").is_file() or (
        tmp_path / "preprocessor_config.json").is_file()
    loaded, loaded_processor = hf.from_pretrained(tmp_path, load_processor=with_processor)
    assert config["toconv"]["image_processor_backend"] == "pil"  # hf_tiny builds PIL processors
    if not with_processor:  # transformers 5 saves and loads OneVision processors only with torchvision
        loaded_processor = processor
    assert type(loaded_processor.image_processor) is type(processor.image_processor)
    image = hf_tiny.image(2 * hf_tiny.tile_side(kind), hf_tiny.tile_side(kind) // 2)
    batch = hf_tiny.inputs(processor, [image])
    again = hf_tiny.inputs(loaded_processor, [image])
    assert torch.equal(batch["input_ids"], again["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**again).logits)
    restored = hf.compressed_projector(loaded).compressor.state_dict()
    assert all(torch.equal(restored[k], v) for k, v in compressor.state_dict().items())
    seq = getattr(model.config, "image_seq_length", None)
    assert getattr(loaded.config, "image_seq_length", None) == seq in (None, n_out**2)


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_stock_load_reads_the_stock_weights_and_fails_loudly_with_the_processor(
        tmp_path: Path, kind: str) -> None:
    model, _, _ = _saved(kind, tmp_path, 8)
    model_class = getattr(transformers, hf.MODEL_CLASSES[kind][0])
    stock = model_class.from_pretrained(tmp_path)  # projector weights under their stock names
    ours = hf.compressed_projector(model).projector.state_dict()
    theirs = hf._owner(stock).multi_modal_projector.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    processor = transformers.AutoProcessor.from_pretrained(tmp_path)
    assert processor.patch_size == 48 // 8
    batch = hf_tiny.inputs(processor, [hf_tiny.image(60, 100)])
    with pytest.raises(ValueError, match=MISMATCH), torch.no_grad():
        stock(**batch)


def test_compressed_model_with_stock_processor_fails_loudly() -> None:
    model, processor = hf_tiny.model("llava_next"), hf_tiny.processor("llava_next")
    hf.compress_llava(model, hf_tiny.compressor(24, 12))  # the processor is left stock
    with pytest.raises(ValueError, match=MISMATCH), torch.no_grad():
        model(**hf_tiny.inputs(processor, [hf_tiny.image(60, 100)]))


def test_from_pretrained_passes_dtype_and_keeps_the_compressor_in_fp32(tmp_path: Path) -> None:
    pytest.importorskip("accelerate", reason="device_map needs accelerate")
    _saved("llava", tmp_path, 12)
    model, processor = hf.from_pretrained(tmp_path, torch_dtype=torch.bfloat16, device_map="cpu")
    wrapper = hf.compressed_projector(model)
    assert next(wrapper.projector.parameters()).dtype == torch.bfloat16
    assert wrapper.compressor.conv.weight.dtype == torch.float32
    assert not any(p.requires_grad for p in wrapper.compressor.parameters())
    batch = hf_tiny.inputs(processor, [hf_tiny.image(50, 70)])
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        assert model(**batch).logits.dtype == torch.bfloat16


def test_plain_model_save_pretrained_writes_the_same_folder(tmp_path: Path) -> None:
    """``model.save_pretrained`` of a compressed model (as trainers call it, also with an explicit
    ``state_dict``) writes stock weights, the compressor and the config field."""
    model, processor = hf_tiny.model("llava"), hf_tiny.processor("llava")
    hf.compress_llava(model, hf_tiny.compressor(24, 6), processor, freeze=False)
    model.save_pretrained(tmp_path / "plain")
    model.save_pretrained(tmp_path / "explicit", state_dict=model.state_dict())
    processor.save_pretrained(tmp_path / "plain")
    processor.save_pretrained(tmp_path / "explicit")
    image = hf_tiny.image(40, 40)
    with torch.no_grad():
        expected = model(**hf_tiny.inputs(processor, [image])).logits
        for name in ("plain", "explicit"):
            loaded, loaded_processor = hf.from_pretrained(tmp_path / name)
            assert torch.equal(loaded(**hf_tiny.inputs(loaded_processor, [image])).logits, expected)


def test_the_saved_image_backend_comes_back_or_warns(tmp_path: Path) -> None:
    """A folder recorded with the torchvision backend loads it where torchvision is installed and
    falls back to PIL with a warning where it is not; a ``backend``/``use_fast`` the caller passes
    wins over the record."""
    _saved("llava", tmp_path, 8)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    config["toconv"]["image_processor_backend"] = "torchvision"
    config_file.write_text(json.dumps(config))
    if importlib.util.find_spec("torchvision") is not None:
        _, processor = hf.from_pretrained(tmp_path)
        image_processor = hf.load_image_processor(tmp_path)
        assert hf.image_processor_backend(processor.image_processor) == "torchvision"
    else:
        with pytest.warns(UserWarning, match="saved with a torchvision image processor"):
            _, processor = hf.from_pretrained(tmp_path)
        with pytest.warns(UserWarning, match="pixel values can differ by about 1e-4"):
            image_processor = hf.load_image_processor(tmp_path)
        assert hf.image_processor_backend(processor.image_processor) == "pil"
    assert type(image_processor) is type(processor.image_processor)
    if int(transformers.__version__.split(".")[0]) >= 5:  # 4.x's AutoProcessor mishandles use_fast
        _, chosen = hf.from_pretrained(tmp_path, processor_kwargs={"backend": "pil"})
        assert hf.image_processor_backend(chosen.image_processor) == "pil"


def test_loading_without_the_processor_keeps_the_backend_for_the_next_save(tmp_path: Path) -> None:
    _saved("llava", tmp_path / "first", 8)
    model, _ = hf.from_pretrained(tmp_path / "first", load_processor=False)
    model.save_pretrained(tmp_path / "again")
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["toconv"]["image_processor_backend"] == "pil"


def test_from_pretrained_refuses_a_stock_folder(tmp_path: Path) -> None:
    hf_tiny.model("llava").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no 'toconv' field"):
        hf.from_pretrained(tmp_path)
