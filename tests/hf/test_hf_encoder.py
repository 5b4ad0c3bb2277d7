"""HFLlavaEncoder: a LLaVA folder as the trainer's encoder gives the tokens its projector reads."""

from __future__ import annotations

from pathlib import Path

import hf_tiny
import numpy as np
import pytest
import torch
from PIL import Image

transformers = hf_tiny.require_transformers()

from toconv.encoders import build_encoder  # noqa: E402
from toconv.encoders.hf_clip import HFCLIPEncoder  # noqa: E402
from toconv.encoders.hf_llava import HFLlavaEncoder, is_llava_source  # noqa: E402
from toconv.integrations import hf  # noqa: E402

SPECS = {"llava": ("llava", None, 24, 32), "llava_full_layers": ("llava", "full", 24, 64),
         "llava_next": ("llava_next", None, 24, 32), "llava_onevision": ("llava_onevision", None, 27, 32)}


@pytest.mark.parametrize("name", list(SPECS))
def test_encoder_tokens_are_what_the_projector_reads(tiny_llava_dirs: dict, name: str) -> None:
    kind, strategy, grid, width = SPECS[name]
    folder = tiny_llava_dirs[name]
    encoder = build_encoder(str(folder))
    assert isinstance(encoder, HFLlavaEncoder)
    assert (encoder.grid_size, encoder.hidden_dim) == (grid, width)
    assert encoder.image_size == hf_tiny.tile_side(kind)
    model = getattr(transformers, hf.MODEL_CLASSES[kind][0]).from_pretrained(folder)
    images = [hf_tiny.image(70, 130, seed=1), hf_tiny.image(120, 50, seed=2)]
    out = encoder(images)
    assert out.patch_tokens.shape == (2, grid * grid, width) and out.cls_token.shape == (2, width)
    processor = hf_tiny.loaded_processor(kind, folder, strategy)  # what the model will use
    assert type(encoder.processor) is type(processor.image_processor)
    for i, image in enumerate(images):
        x, _ = hf_tiny.projector_io(model, hf_tiny.inputs(processor, [image]))
        base = x[0]  # NeXT and OneVision: the first tile, the whole image
        if base.shape[0] == grid * grid + 1:  # 'full' with a CLIP tower: the CLS token leads
            assert torch.allclose(out.cls_token[i], base[0], atol=1e-5)
            base = base[1:]
        assert torch.allclose(out.patch_tokens[i], base, atol=1e-5)
    if kind == "llava_onevision":  # SigLIP has no CLS token: the mean patch token stands in
        assert torch.allclose(out.cls_token, out.patch_tokens.mean(dim=1))


def test_routing_keeps_clip_folders_and_recognises_llava(tiny_llava_dirs: dict,
                                                         tiny_clip_path: Path) -> None:
    assert isinstance(build_encoder(str(tiny_clip_path)), HFCLIPEncoder)
    assert is_llava_source(tiny_llava_dirs["llava_next"])
    assert is_llava_source("llava-hf/llava-onevision-qwen2-0.5b-ov-hf")  # by name, not fetched
    assert not is_llava_source("openai/clip-vit-large-patch14-336")
    assert not is_llava_source("./missing-llava-folder")


def test_trained_compressor_plugs_into_the_model(tiny_llava_dirs: dict, tmp_path: Path) -> None:
    """``encoder.name=<llava folder>`` trains a compressor for that model's projector."""
    pytest.importorskip("omegaconf", reason="the trainer needs the train extra")
    pytest.importorskip("tensorboard", reason="the trainer needs the train extra")
    from toconv.integrations.towers import load_tower_compressor
    from toconv.train import main

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 255, (60 + 8 * i, 90, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"photo_{i}.jpg")
    folder = tiny_llava_dirs["llava_onevision"]
    main([f"encoder.name={folder}", f"data.imagenet_root={images}",
          f"data.cache_root={tmp_path / 'cache'}", f"experiment.output_dir={tmp_path / 'runs'}",
          "experiment.name=ov", "training.epochs=1", "training.batch_size=4", "hardware.device=cpu",
          "model.compressor.input_grid_size=27", "model.compressor.output_grid_size=9"],
         progress=False)
    model = transformers.LlavaOnevisionForConditionalGeneration.from_pretrained(folder)
    layout = hf.llava_layout(model)
    compressor = load_tower_compressor(tmp_path / "runs" / "ov" / "latest.safetensors",
                                       layout.grid, 9, layout.width)
    processor = hf_tiny.processor("llava_onevision")
    hf.compress_llava(model, compressor, processor)
    batch = hf_tiny.inputs(processor, [hf_tiny.image(300, 200)])
    assert hf_tiny.packed_count(model, batch) == hf_tiny.count(batch)
