"""Compressed CLIP / S2 towers built through LLaVA's (patched) ``build_vision_tower``."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("llava.model.llava_arch", reason="llava-torch is not installed "
                    "(pip install '.[llava]', Python <= 3.11)")
pytest.importorskip("s2wrapper", reason="scaling-on-scales is not installed")

import torch  # noqa: E402
from llava.model import llava_arch  # noqa: E402
from llava.model.multimodal_encoder import builder, clip_encoder  # noqa: E402
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower  # noqa: E402
from llava_helpers import WIDTH, images, save_compressor, tower_args  # noqa: E402
from s2wrapper import forward as s2_forward  # noqa: E402

import llava_patch  # noqa: E402
from llava_patch.patch import _state  # noqa: E402
from llava_patch.towers import S2CLIPVisionTower  # noqa: E402
from toconv import TokenCompressor  # noqa: E402

pytestmark = pytest.mark.usefixtures("patched")


def on(**fields: object) -> dict[str, object]:
    return {"use_token_compression": True, **fields}


def test_apply_patches_both_import_sites() -> None:
    assert llava_patch.is_applied()
    assert builder.build_vision_tower is llava_arch.build_vision_tower
    assert builder.build_vision_tower is not _state["original_build"]


@pytest.mark.parametrize("fields", [{}, {"use_token_compression": False}])
def test_off_is_stock(tiny_clip_path: Path, fields: dict[str, object]) -> None:
    args = tower_args(tiny_clip_path, **fields)
    tower = llava_arch.build_vision_tower(args)
    stock = _state["original_build"](args)
    assert type(tower) is CLIPVisionTower
    x = images(2, 336)
    assert torch.equal(tower(x), stock(x))
    assert (tower.num_patches, tower.num_patches_per_side) == (576, 24)


@pytest.mark.parametrize(("size", "grid", "out"), [(336, 24, 12), (336, 24, 8), (336, 24, 6),
                                                   (224, 16, 12), (224, 16, 8)])
def test_presets_compress_and_report_grid(tiny_clip_path: Path, clip224: Path, tmp_path: Path,
                                          size: int, grid: int, out: int,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    clip = tiny_clip_path if size == 336 else clip224
    ckpt = save_compressor(tmp_path / "c.safetensors", grid, out)
    args = tower_args(clip, **on(compression_input_size=grid, compression_output_size=out,
                                 compression_checkpoint=str(ckpt)))
    tower = llava_arch.build_vision_tower(args)
    assert f"TokenCompressor [{grid}to{out}]" in capsys.readouterr().out
    x = images(2, size)
    y = tower(x)
    assert y.shape == (2, out * out, WIDTH)
    assert (tower.num_patches, tower.num_patches_per_side) == (out * out, out)
    assert (tower.config.image_size, tower.config.patch_size, tower.hidden_size) == (size, 14, WIDTH)
    stock = _state["original_build"](args)
    expected = TokenCompressor.from_pretrained(ckpt)(stock(x))
    torch.testing.assert_close(y, expected)


def test_input_size_mismatch_fails_at_build(tiny_clip_path: Path) -> None:
    args = tower_args(tiny_clip_path, **on(compression_input_size=16, compression_output_size=8))
    with pytest.raises(ValueError, match=r"16x16 patch grid.*gives 24x24"):
        llava_arch.build_vision_tower(args)


def test_checkpoint_geometry_and_width_are_checked(tiny_clip_path: Path, tmp_path: Path) -> None:
    wrong_grid = save_compressor(tmp_path / "g.safetensors", 24, 8)
    wrong_width = save_compressor(tmp_path / "w.safetensors", 24, 12, hidden_dim=2 * WIDTH)
    for ckpt, message in [(wrong_grid, "24to8"), (wrong_width, f"hidden_dim={2 * WIDTH}")]:
        args = tower_args(tiny_clip_path, **on(compression_checkpoint=str(ckpt)))
        with pytest.raises(ValueError, match=message):
            llava_arch.build_vision_tower(args)


def test_compressor_trains_outside_no_grad_and_clip_stays_frozen(tiny_clip_path: Path,
                                                                  ckpt_24to12: Path) -> None:
    args = tower_args(tiny_clip_path, **on(compression_checkpoint=str(ckpt_24to12)))
    tower = llava_arch.build_vision_tower(args)
    y = tower(images(2, 336))
    assert y.requires_grad
    y.square().mean().backward()
    assert all(p.grad is not None for p in tower.token_compressor.parameters())
    assert all(p.grad is None and not p.requires_grad for p in tower.vision_tower.parameters())


def test_freeze_flag_freezes_compressor(tiny_clip_path: Path, ckpt_24to12: Path) -> None:
    args = tower_args(tiny_clip_path, **on(compression_checkpoint=str(ckpt_24to12),
                                           freeze_token_compressor=True))
    tower = llava_arch.build_vision_tower(args)
    assert not any(p.requires_grad for p in tower.token_compressor.parameters())
    assert not tower(images(1, 336)).requires_grad


def test_fresh_tower_without_checkpoint_starts_as_average_pooling(tiny_clip_path: Path) -> None:
    tower = llava_arch.build_vision_tower(tower_args(tiny_clip_path, **on()))
    x = images(1, 336)
    grid = _state["original_build"](tower_args(tiny_clip_path))(x)
    pooled = torch.nn.functional.avg_pool2d(grid.reshape(1, 24, 24, WIDTH).permute(0, 3, 1, 2),
                                            3, 2, 1, count_include_pad=False)
    torch.testing.assert_close(tower(x), pooled.flatten(2).transpose(1, 2))


def test_dtype_follows_tower_and_list_input(tiny_clip_path: Path, ckpt_24to12: Path) -> None:
    tower = llava_arch.build_vision_tower(
        tower_args(tiny_clip_path, **on(compression_checkpoint=str(ckpt_24to12))))
    x = images(2, 336)
    reference = tower(x)
    listed = tower([x[0], x[1]])
    assert isinstance(listed, list) and [t.shape for t in listed] == [(1, 144, WIDTH)] * 2
    torch.testing.assert_close(torch.cat(listed), reference)
    tower.to(torch.bfloat16)
    assert tower.token_compressor.conv.weight.dtype == torch.bfloat16
    y = tower(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), reference, atol=0.1, rtol=0.1)


def test_cls_patch_keeps_cls_token(tiny_clip_path: Path, ckpt_24to12: Path) -> None:
    args = tower_args(tiny_clip_path, mm_vision_select_feature="cls_patch",
                      **on(compression_checkpoint=str(ckpt_24to12)))
    tower = llava_arch.build_vision_tower(args)
    x = images(2, 336)
    y, stock = tower(x), _state["original_build"](args)(x)
    assert y.shape == (2, 1 + 144, WIDTH)
    torch.testing.assert_close(y[:, 0], stock[:, 0])


def test_delay_loaded_tower_without_weights_fails(tiny_clip_path: Path) -> None:
    tower = llava_arch.build_vision_tower(tower_args(tiny_clip_path, **on()), delay_load=True)
    with pytest.raises(ValueError, match="never loaded"):
        tower.load_model()
    with pytest.raises(ValueError, match="no weights yet"):
        tower(images(1, 336))


def test_delay_loaded_tower_takes_checkpoint(tiny_clip_path: Path, ckpt_24to12: Path) -> None:
    args = tower_args(tiny_clip_path, **on(compression_checkpoint=str(ckpt_24to12)))
    delayed = llava_arch.build_vision_tower(args, delay_load=True)
    assert delayed.num_patches == 144 and not delayed.is_loaded
    delayed.load_model()
    x = images(1, 336)
    torch.testing.assert_close(delayed(x), llava_arch.build_vision_tower(args)(x))


@pytest.mark.parametrize("delay_load", [False, True])
def test_s2_tower(tiny_clip_path: Path, tmp_path: Path, delay_load: bool) -> None:
    ckpt = save_compressor(tmp_path / "s2.safetensors", 24, 12, hidden_dim=2 * WIDTH)
    args = tower_args(tiny_clip_path, **on(s2=True, s2_scales="336,672",
                                           compression_checkpoint=str(ckpt)))
    tower = llava_arch.build_vision_tower(args, delay_load=delay_load)
    if delay_load:
        tower.load_model()
    assert isinstance(tower, S2CLIPVisionTower) and tower.hidden_size == 2 * WIDTH
    assert tower.image_processor.crop_size == {"height": 672, "width": 672}
    x = images(1, 672)
    y = tower(x)
    assert y.shape == (1, 144, 2 * WIDTH)
    plain = _state["original_build"](args)
    multi = s2_forward(lambda t: plain(t), x, img_sizes=[336, 672], max_split_size=336)
    torch.testing.assert_close(y, TokenCompressor.from_pretrained(ckpt)(multi))


def test_s2_uses_llavas_class_when_installed(tiny_clip_path: Path, ckpt_24to12: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    class CLIPVisionTowerS2(S2CLIPVisionTower):
        """Like LLaVA's class: reads ``s2_image_size``, set only after the base ``__init__``."""

        def __init__(self, vision_tower, args, delay_load=False):  # type: ignore[no-untyped-def]
            CLIPVisionTower.__init__(self, vision_tower, args, delay_load)
            self.s2_image_size = self.s2_scales[-1]

        def load_model(self, device_map=None):  # type: ignore[no-untyped-def]
            CLIPVisionTower.load_model(self, device_map)
            self.image_processor.crop_size["height"] = self.s2_image_size

    monkeypatch.setattr(clip_encoder, "CLIPVisionTowerS2", CLIPVisionTowerS2, raising=False)
    ckpt = save_compressor(ckpt_24to12.parent / "s2x3.safetensors", 24, 12, hidden_dim=3 * WIDTH)
    args = tower_args(tiny_clip_path, **on(s2=True, compression_checkpoint=str(ckpt)))
    tower = llava_arch.build_vision_tower(args)  # delay_load=False: LLaVA's bug must not bite
    assert isinstance(tower, CLIPVisionTowerS2) and tower.hidden_size == 3 * WIDTH
    assert tower.image_processor.crop_size["height"] == 1008
