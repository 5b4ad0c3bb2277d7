import subprocess
import sys

import pytest
import torch

from toconv import (
    CompressorConfig,
    TokenCompressor,
    create_compressor,
    list_presets,
    load_compressor,
)
from toconv.geometry import gather_rf_tokens
from toconv.models import list_families

PAIRS = [(24, 12), (24, 8), (24, 6), (24, 4), (16, 12), (16, 8)]


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shapes_and_dtypes(pair, dtype, device):
    n_in, n_out = pair
    c = TokenCompressor(n_in, n_out, hidden_dim=16).to(device, dtype)
    x = torch.randn(2, n_in * n_in, 16, dtype=dtype, device=device)
    y = c(x)
    assert y.shape == (2, n_out * n_out, 16)
    assert y.dtype == dtype and y.device == x.device


def test_summary_line():
    c = TokenCompressor(input_grid_size=24, output_grid_size=12, hidden_dim=1024)
    assert repr(c) == "TokenCompressor [24to12]: 24×24 → 12×12, PartialConv(k=3, s=2, p=1), RF 3×3"


def test_average_pooling_init_is_exact_rf_mean():
    c = TokenCompressor(24, 12, hidden_dim=8)
    x = torch.randn(3, 576, 8)
    rf = c.rf
    mask = rf.mask.float()[None, :, :, None]
    expected = (gather_rf_tokens(x, rf) * mask).sum(2) / mask.sum(2)
    torch.testing.assert_close(c(x), expected)


def test_output_width_option():
    c = TokenCompressor(24, 6, hidden_dim=8, out_dim=12, init="random")
    assert c(torch.randn(1, 576, 8)).shape == (1, 36, 12)
    with pytest.raises(ValueError, match="init='avg' needs out_dim == hidden_dim"):
        TokenCompressor(24, 6, hidden_dim=8, out_dim=12)


def test_cls_token_passes_through_unchanged():
    c = TokenCompressor(24, 8, hidden_dim=8, cls_token=True)
    x = torch.randn(2, 577, 8)
    y = c(x)
    assert y.shape == (2, 65, 8)
    assert torch.equal(y[:, 0], x[:, 0])
    torch.testing.assert_close(y[:, 1:], TokenCompressor(24, 8, hidden_dim=8)(x[:, 1:]))
    with pytest.raises(ValueError, match="out_dim must equal hidden_dim"):
        TokenCompressor(24, 8, hidden_dim=8, out_dim=4, cls_token=True, init="random")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 577, 8), r"expects 576 tokens \(24x24 grid\), got 577 .*CLS token is included"),
        ((2, 500, 8), r"expects 576 tokens \(24x24 grid\), got 500"),
        ((2, 576, 7), r"expects channel width 8, got 7"),
        ((576, 8), r"expects tokens of shape \(batch, 576, 8\), got \(576, 8\)"),
    ],
)
def test_bad_inputs_say_expected_and_got(shape, message):
    c = TokenCompressor(24, 12, hidden_dim=8)
    with pytest.raises(ValueError, match=message):
        c(torch.randn(*shape))


def test_cls_option_rejects_missing_cls():
    c = TokenCompressor(24, 12, hidden_dim=8, cls_token=True)
    with pytest.raises(ValueError, match=r"expects 577 tokens \(24x24 grid plus CLS\), got 576"):
        c(torch.randn(1, 576, 8))


@pytest.mark.parametrize("as_file", [True, False])
def test_save_and_load_round_trip(tmp_path, as_file):
    torch.manual_seed(0)
    c = TokenCompressor(24, 6, hidden_dim=8, init="random")
    target = tmp_path / ("c.safetensors" if as_file else "ckpt")
    file = c.save_pretrained(target, metadata={"note": "test"})
    assert file.suffix == ".safetensors" and file.exists()
    loaded = TokenCompressor.from_pretrained(target, input_grid_size=24, output_grid_size=6)
    assert loaded.config == c.config
    x = torch.randn(2, 576, 8)
    assert torch.equal(loaded(x), c(x))
    assert CompressorConfig.from_pretrained(target) == c.config


def test_load_refuses_mismatched_geometry(tmp_path):
    TokenCompressor(24, 6, hidden_dim=8).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"holds 24to6 .*but 24to12 .* was expected"):
        TokenCompressor.from_pretrained(tmp_path, output_grid_size=12)
    with pytest.raises(ValueError, match="hidden_dim=8.*hidden_dim=1024"):
        TokenCompressor.from_pretrained(tmp_path, hidden_dim=1024)


def test_load_rejects_non_toconv_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a toconv checkpoint"):
        TokenCompressor.from_pretrained(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="no toconv checkpoint"):
        TokenCompressor.from_pretrained(tmp_path / "missing")


def test_load_is_strict_about_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    file = TokenCompressor(24, 6, hidden_dim=8).save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(file), "pt") as f:
        meta = f.metadata()
    state = load_file(str(file))
    del state["conv.bias"]
    save_file(state, str(file), metadata=meta)
    with pytest.raises(RuntimeError, match="conv.bias"):
        TokenCompressor.from_pretrained(file)


def test_registry():
    names = list_presets()
    assert {"24to12", "24to8", "24to6", "24to4", "16to12", "16to8"} <= set(names)
    c = create_compressor("dinov2-s336-24to6")
    assert c.config.hidden_dim == 384 and c.geometry.kernel_size == 4
    assert create_compressor("24to12", hidden_dim=32).config.hidden_dim == 32
    with pytest.raises(ValueError, match="unknown preset 'nope'; expected one of 16to12"):
        create_compressor("nope")


def test_foreign_files_raise_value_errors_saying_so(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"weights.pt is not a safetensors file \(a torch pickle"):
        TokenCompressor.from_pretrained(tmp_path / "weights.pt")
    (tmp_path / "noise.safetensors").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="noise.safetensors is not a safetensors file"):
        load_compressor(tmp_path / "noise.safetensors")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_tokens_into_fp32_weights_return_the_input_dtype(dtype):
    c = TokenCompressor(24, 8, hidden_dim=8)
    x = torch.randn(2, 576, 8)
    y = c(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), c(x.to(dtype).float()), atol=1e-2, rtol=1e-2)


def test_checkpoints_name_their_family_and_old_ones_still_load(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    c = TokenCompressor(24, 12, hidden_dim=8, init="random")
    file = c.save_pretrained(tmp_path / "new.safetensors")
    with safe_open(str(file), "pt") as f:
        meta = f.metadata()
    assert meta["toconv_family"] == "partial_conv" and "partial_conv" in list_families()
    assert isinstance(load_compressor(file), TokenCompressor)
    # a checkpoint written before families existed has no family key: read as partial_conv
    del meta["toconv_family"]
    save_file(load_file(str(file)), str(tmp_path / "old.safetensors"), metadata=meta)
    old = load_compressor(tmp_path / "old.safetensors", output_grid_size=12)
    assert torch.equal(old.conv.weight, c.conv.weight)
    meta["toconv_family"] = "tiles"
    save_file(load_file(str(file)), str(tmp_path / "tiles.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="unknown compressor family 'tiles'; expected one of partial_conv"):
        load_compressor(tmp_path / "tiles.safetensors")


def test_inference_imports_no_training_code():
    """``import toconv`` / ``TokenCompressor`` / ``llava_patch`` stay light: no training modules,
    omegaconf, accelerate or matplotlib."""
    code = ("import sys, toconv, llava_patch; from toconv import TokenCompressor; "
            "import toconv.integrations; TokenCompressor(24, 12, hidden_dim=8); "
            "heavy = ('toconv.objective', 'toconv.training', 'toconv.bench', 'toconv.metrics', "
            "'toconv.config', 'omegaconf', 'accelerate', 'matplotlib'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
