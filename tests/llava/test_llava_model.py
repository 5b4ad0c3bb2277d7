"""Tiny ``LlavaLlamaForCausalLM`` with a compressed tower: forward, generate, save/reload, anyres."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("llava.model.llava_arch", reason="llava-torch is not installed "
                    "(pip install '.[llava]', Python <= 3.11)")

import torch  # noqa: E402
from llava.constants import IMAGE_TOKEN_INDEX  # noqa: E402
from llava.model import LlavaLlamaForCausalLM  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402
from llava_helpers import WIDTH, build_llava, images, llava_config, save_tokenizer  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from toconv import TokenCompressor  # noqa: E402

pytestmark = pytest.mark.usefixtures("patched")


def prompt(length: int = 6) -> torch.Tensor:
    ids = torch.arange(3, 3 + length).unsqueeze(0)
    ids[0, 1] = IMAGE_TOKEN_INDEX
    return ids


def compressed_config(clip: Path, ckpt: Path, **fields: object) -> object:
    return llava_config(clip, use_token_compression=True, compression_input_size=24,
                        compression_output_size=12, compression_checkpoint=str(ckpt), **fields)


def image_tokens(model: LlavaLlamaForCausalLM, x: torch.Tensor | list[torch.Tensor],
                 **kwargs: object) -> int:
    """How many positions the image(s) of ``prompt()`` take in the LM input."""
    ids = prompt()
    *_, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, x,
                                                              **kwargs)
    return embeds.shape[1] - (ids.shape[1] - 1)


def test_forward_and_generate_use_compressed_tokens(tiny_clip_path: Path,
                                                    ckpt_24to12: Path) -> None:
    model = build_llava(compressed_config(tiny_clip_path, ckpt_24to12))
    x = images(1, 336)
    assert image_tokens(model, x) == 144
    with torch.no_grad():
        out = model(input_ids=prompt(), images=x)
        tokens = model.generate(inputs=prompt(), images=x, max_new_tokens=4, do_sample=False)
    assert out.logits.shape == (1, 6 - 1 + 144, 128)
    new = tokens[0, -4:]  # transformers 4.36 puts the BOS id before them
    assert new[0] == out.logits[0, -1].argmax()  # greedy step 1 matches the forward pass


def test_off_model_uses_all_patches(tiny_clip_path: Path) -> None:
    model = build_llava(llava_config(tiny_clip_path))
    assert image_tokens(model, images(1, 336)) == 576
    assert not hasattr(model.config, "use_token_compression")


def test_full_save_reload_round_trip(tiny_clip_path: Path, ckpt_24to12: Path,
                                     tmp_path: Path) -> None:
    model = build_llava(compressed_config(tiny_clip_path, ckpt_24to12))
    with torch.no_grad():  # pretend the compressor was finetuned: its saved weights must win
        model.get_vision_tower().token_compressor.conv.weight.mul_(1.5)
    model.save_pretrained(tmp_path / "full")
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["use_token_compression"] is True
    assert config["compression_checkpoint"] == str(ckpt_24to12)

    reloaded = LlavaLlamaForCausalLM.from_pretrained(tmp_path / "full", low_cpu_mem_usage=True)
    reloaded.get_vision_tower().load_model()
    x = images(1, 336)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(input_ids=prompt(), images=x).logits,
                                   model(input_ids=prompt(), images=x).logits)


def test_reload_without_compressor_weights_fails(tiny_clip_path: Path, ckpt_24to12: Path,
                                                 tmp_path: Path) -> None:
    build_llava(compressed_config(tiny_clip_path, ckpt_24to12)).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    kept = {k: v for k, v in load_file(weights).items() if "token_compressor" not in k}
    save_file(kept, weights, metadata={"format": "pt"})
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "compression_checkpoint": None}))

    model = LlavaLlamaForCausalLM.from_pretrained(tmp_path, low_cpu_mem_usage=True)
    with pytest.raises(ValueError, match="never loaded"):
        model.get_vision_tower().load_model()


def test_load_pretrained_model_restores_compressor(tiny_clip_path: Path, ckpt_24to12: Path,
                                                   tmp_path: Path) -> None:
    model = build_llava(compressed_config(tiny_clip_path, ckpt_24to12))
    with torch.no_grad():
        model.get_vision_tower().token_compressor.conv.bias.add_(1.0)
    folder = tmp_path / "llava-tiny"
    model.save_pretrained(folder)
    save_tokenizer(folder)
    _, loaded, processor, _ = load_pretrained_model(str(folder), None, "llava-tiny", device="cpu")
    tower = loaded.get_vision_tower()
    assert tower.num_patches == 144 and processor.crop_size["height"] == 336
    want = model.get_vision_tower().token_compressor.state_dict()
    for name, got in tower.token_compressor.state_dict().items():  # saved in fp16, like the LM
        assert got.dtype == tower.dtype, name
        torch.testing.assert_close(got, want[name].half().to(tower.dtype))


def test_anyres_spatial_unpad(tiny_clip_path: Path, ckpt_24to12: Path) -> None:
    from llava.mm_utils import process_images
    from PIL import Image

    pinpoints = [[336, 672], [672, 336], [672, 672]]
    config = compressed_config(tiny_clip_path, ckpt_24to12, image_aspect_ratio="anyres",
                               mm_patch_merge_type="spatial_unpad",
                               image_grid_pinpoints=pinpoints)
    model = build_llava(config)
    photo = Image.fromarray(torch.randint(0, 255, (336, 672, 3), dtype=torch.uint8).numpy())
    tiles = process_images([photo], model.get_vision_tower().image_processor, config)
    assert tiles.shape == (1, 3, 3, 336, 336)  # base view + 2 tiles
    # base 12×12, then the 2×1 tile grid as 12 rows × 24 columns, each row ending in a newline
    assert image_tokens(model, tiles, image_sizes=[photo.size]) == 144 + 12 * (24 + 1)
    with torch.no_grad():
        out = model(input_ids=prompt(), images=tiles, image_sizes=[photo.size])
    assert torch.isfinite(out.logits).all()


def test_projector_width_follows_s2_tower(tiny_clip_path: Path, tmp_path: Path) -> None:
    ckpt = TokenCompressor(24, 12, 2 * WIDTH).save_pretrained(tmp_path / "s2.safetensors")
    config = compressed_config(tiny_clip_path, ckpt, s2=True, s2_scales="336,672",
                               mm_hidden_size=2 * WIDTH)
    model = build_llava(config)
    assert image_tokens(model, images(1, 672)) == 144
