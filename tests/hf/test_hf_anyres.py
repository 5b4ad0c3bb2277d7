"""LLaVA-NeXT and LLaVA-OneVision ("anyres" tiles): the processor's token count equals the
model's packed features for images of any size, OneVision multi-image prompts and videos."""

from __future__ import annotations

import random

import hf_tiny
import pytest
import torch

transformers = hf_tiny.require_transformers()

from toconv.integrations import hf  # noqa: E402

#: 25 random sizes plus extreme aspect ratios (tall, wide, tiny, beyond the largest pinpoint), in
#: tiles: x the tile side.
_rng = random.Random(13)
SIZES = [(_rng.uniform(0.15, 4.6), _rng.uniform(0.15, 4.6)) for _ in range(25)] + [
    (8.0, 0.2), (0.2, 8.0), (6.0, 0.4), (0.4, 6.0), (0.25, 0.25), (5.0, 5.0)]


@pytest.mark.parametrize(("kind", "n_out"), [("llava_next", 12), ("llava_next", 8),
                                             ("llava_onevision", 14), ("llava_onevision", 9)])
def test_counts_equal_features_for_any_image_size(kind: str, n_out: int) -> None:
    model, processor = hf_tiny.model(kind), hf_tiny.processor(kind)
    hf.compress_llava(model, hf_tiny.compressor(hf_tiny.GRID[kind], n_out), processor)
    tile = hf_tiny.tile_side(kind)
    for i, (height, width) in enumerate(SIZES):
        size = (max(round(height * tile), 2), max(round(width * tile), 2))
        batch = hf_tiny.inputs(processor, [hf_tiny.image(*size, seed=i)])
        assert hf_tiny.packed_count(model, batch) == hf_tiny.count(batch), size


def test_onevision_shrinks_large_images_on_the_compressed_grid() -> None:
    """anyres_max_9 interpolates images past 9 tiles' worth of tokens (on the compressed grid)."""
    model, processor = hf_tiny.model("llava_onevision"), hf_tiny.processor("llava_onevision")
    hf.compress_llava(model, hf_tiny.compressor(27, 9), processor)
    batch = hf_tiny.inputs(processor, [hf_tiny.image(880, 880)])  # 4x4 tiles of 9x9 tokens
    count = hf_tiny.count(batch)
    assert batch["pixel_values"].shape[1] == 17
    assert count < 81 + 36 * 37  # base + unshrunk 36x36 grid with its newline column
    assert hf_tiny.packed_count(model, batch) == count


def test_onevision_multi_image() -> None:
    model, processor = hf_tiny.model("llava_onevision"), hf_tiny.processor("llava_onevision")
    hf.compress_llava(model, hf_tiny.compressor(27, 9), processor)
    images = [[hf_tiny.image(300, 150, seed=1), hf_tiny.image(100, 700, seed=2)]]
    batch = hf_tiny.inputs(processor, images, text="USER: <image> and <image> describe")
    if "batch_num_images" in batch:  # transformers >= 4.51: no tiles for several images
        assert hf_tiny.count(batch) == 2 * (81 + 1)  # one base tile each, plus a newline token
    assert hf_tiny.packed_count(model, batch) == hf_tiny.count(batch)


@pytest.mark.parametrize("n_out", [14, 9])
def test_onevision_video(n_out: int) -> None:
    model, processor = hf_tiny.model("llava_onevision"), hf_tiny.processor("llava_onevision")
    hf.compress_llava(model, hf_tiny.compressor(27, n_out), processor)
    frames = 3
    pixels = torch.randn(1, frames, 3, hf_tiny.SIGLIP_SIZE, hf_tiny.SIGLIP_SIZE)
    tokens = processor.replace_video_token({"pixel_values_videos": pixels}, 0) if hasattr(
        processor, "replace_video_token") else None
    if tokens is None:  # transformers 4.49: the count is inline in __call__
        video = (torch.rand(frames, hf_tiny.SIGLIP_SIZE, hf_tiny.SIGLIP_SIZE, 3) * 255).byte()
        batch = hf_tiny.inputs(processor, text="USER: <video> describe", videos=[video.numpy()])
        pixels = batch["pixel_values_videos"]
    else:
        ids = processor.tokenizer([f"USER: {tokens} describe"], return_tensors="pt")
        batch = {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"],
                 "pixel_values_videos": pixels}
    expected = frames * ((n_out + 1) // 2) ** 2
    assert hf_tiny.count(batch, hf_tiny.VIDEO_TOKEN_ID) == expected + 1  # + one newline
    try:
        packed = hf_tiny.packed_count(model, batch, method="apply_pooling")
    except UnboundLocalError:  # transformers 4.49's forward fails on any video-only prompt
        pytest.skip("this transformers cannot run OneVision video prompts (stock models neither)")
    assert packed == expected
