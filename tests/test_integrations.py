"""The tower-agnostic integration helpers shared by llava_patch and the transformers integration."""

from __future__ import annotations

import pytest
import torch

from toconv import TokenCompressor
from toconv.integrations import compress_patch_tokens, load_tower_compressor, tower_grid_side


def test_grid_side_drops_the_remainder_like_the_patch_embedding() -> None:
    assert tower_grid_side(336, 14) == 24 and tower_grid_side(384, 14) == 27
    with pytest.raises(ValueError, match=r"expects a 16x16 patch grid, but the tower gives 24x24 "
                                         r"\(image_size=336, patch_size=14\)"):
        tower_grid_side(336, 14, expected=16, name="the tower")


@pytest.mark.parametrize("has_cls", [False, True])
def test_cls_passes_through_and_the_features_dtype_comes_back(has_cls: bool) -> None:
    compressor = TokenCompressor(24, 8, hidden_dim=8, init="random")
    features = torch.randn(2, 576 + has_cls, 8, dtype=torch.bfloat16)
    out = compress_patch_tokens(compressor, features, has_cls)
    assert out.shape == (2, 64 + has_cls, 8) and out.dtype == torch.bfloat16
    if has_cls:
        assert torch.equal(out[:, 0], features[:, 0])
    torch.testing.assert_close(out[:, has_cls:].float(), compressor(features[:, has_cls:].float()),
                               atol=2e-2, rtol=2e-2)


def test_loading_checks_the_checkpoint_against_the_tower(tmp_path) -> None:
    TokenCompressor(24, 12, hidden_dim=8).save_pretrained(tmp_path / "c.safetensors")
    c = load_tower_compressor(tmp_path / "c.safetensors", 24, 12, 8, dtype=torch.float16)
    assert c.conv.weight.dtype == torch.float16
    with pytest.raises(ValueError, match="hidden_dim=8.*hidden_dim=16"):
        load_tower_compressor(tmp_path / "c.safetensors", 24, 12, 16)
    with pytest.raises(ValueError, match="24to12 .*but 24to8"):
        load_tower_compressor(tmp_path / "c.safetensors", 24, 8, 8)
    TokenCompressor(24, 12, hidden_dim=8, out_dim=4, init="random").save_pretrained(tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="outputs 4 channels, but the projector after the tower expects"):
        load_tower_compressor(tmp_path / "w.safetensors", 24, 12, 8)
