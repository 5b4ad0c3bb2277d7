"""compress_llava on LLaVA-1.5-style models: processor counts, the projector's input and output,
generate, remove_compression, gradients, dtypes."""

from __future__ import annotations

import hf_tiny
import pytest
import torch

transformers = hf_tiny.require_transformers()

from toconv.integrations import hf  # noqa: E402


@pytest.mark.parametrize("strategy", ["default", "full"])
@pytest.mark.parametrize("n_out", [12, 8, 6])
def test_processor_counts_the_compressed_tokens(n_out: int, strategy: str) -> None:
    model = hf_tiny.model("llava", strategy=strategy)
    processor = hf_tiny.processor("llava", strategy=strategy)
    hf.compress_llava(model, hf_tiny.compressor(24, n_out), processor)
    assert processor.patch_size == 48 // n_out
    assert model.config.image_seq_length == n_out**2
    batch = hf_tiny.inputs(processor, [hf_tiny.image(70, 130)])
    cls = int(strategy == "full")  # the CLIP tower's CLS token passes through the compressor
    assert hf_tiny.count(batch) == n_out**2 + cls
    x, y = hf_tiny.projector_io(model, batch)
    assert x.shape == (1, 24 * 24 + cls, 32) and y.shape == (1, n_out**2 + cls, 32)


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_projector_output_is_projector_of_compressed_features(strategy: str) -> None:
    model = hf_tiny.model("llava", strategy=strategy)
    processor = hf_tiny.processor("llava", strategy=strategy)
    stock_batch = hf_tiny.inputs(processor, [hf_tiny.image(60, 90)])
    stock_in, _ = hf_tiny.projector_io(model, stock_batch)
    projector = hf._owner(model).multi_modal_projector
    compressor = hf_tiny.compressor(24, 12)
    hf.compress_llava(model, compressor, processor)
    x, y = hf_tiny.projector_io(model, hf_tiny.inputs(processor, [hf_tiny.image(60, 90)]))
    assert torch.equal(x, stock_in)  # the compressor reads exactly what the stock projector read
    with torch.no_grad():
        tokens = compressor(x[:, 1:]) if strategy == "full" else compressor(x)
        if strategy == "full":
            tokens = torch.cat([x[:, :1], tokens], dim=1)
        assert torch.allclose(y, projector(tokens), atol=1e-6)


@pytest.mark.parametrize("kind", hf_tiny.KINDS)
def test_generate(kind: str) -> None:
    model, processor = hf_tiny.model(kind), hf_tiny.processor(kind)
    grid = hf_tiny.GRID[kind]
    hf.compress_llava(model, hf_tiny.compressor(grid, grid // 3), processor)
    batch = hf_tiny.inputs(processor, [hf_tiny.image(80, 120)])
    out = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, batch["input_ids"].shape[1] + 3)


def test_remove_compression_restores_model_processor_and_config() -> None:
    model, processor = hf_tiny.model("llava"), hf_tiny.processor("llava")
    image = hf_tiny.image(64, 64)
    batch = hf_tiny.inputs(processor, [image])
    with torch.no_grad():
        stock = model(**batch).logits
    compressor = hf_tiny.compressor(24, 8)
    hf.compress_llava(model, compressor, processor)
    assert hf.compressed_projector(model) is not None and hasattr(model.config, "toconv")
    assert hf.remove_compression(model, processor) is compressor
    assert hf.compressed_projector(model) is None
    assert processor.patch_size == 2 and model.config.image_seq_length == 576
    assert not hasattr(model.config, "toconv") and "save_pretrained" not in model.__dict__
    again = hf_tiny.inputs(processor, [image])
    assert torch.equal(again["input_ids"], batch["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**again).logits, stock)


def test_feature_layer_list_concatenates_widths() -> None:
    model = hf_tiny.model("llava", strategy="full", layer=[-2, -1])
    processor = hf_tiny.processor("llava", strategy="full")
    with pytest.raises(ValueError, match=r"width 32.*width 64 = vision width 32 x 2"):
        hf.compress_llava(model, hf_tiny.compressor(24, 12, width=32), processor)
    hf.compress_llava(model, hf_tiny.compressor(24, 12, width=64), processor)
    x, y = hf_tiny.projector_io(model, hf_tiny.inputs(processor, [hf_tiny.image(50, 50)]))
    assert x.shape == (1, 577, 64) and y.shape == (1, 145, 32)


@pytest.mark.parametrize("freeze", [True, False])
def test_gradients_reach_the_compressor_unless_frozen(freeze: bool) -> None:
    model, processor = hf_tiny.model("llava"), hf_tiny.processor("llava")
    compressor = hf_tiny.compressor(24, 12)
    hf.compress_llava(model, compressor, processor, freeze=freeze)
    model.train()
    model(**hf_tiny.inputs(processor, [hf_tiny.image(40, 40)])).logits.float().square().mean().backward()
    grads = [p.grad for p in compressor.parameters()]
    if freeze:
        assert all(not p.requires_grad for p in compressor.parameters())
        assert all(g is None for g in grads)
    else:
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
    projector = hf.compressed_projector(model).projector
    assert all(p.grad is not None for p in projector.parameters())


def test_bf16_model_with_fp32_compressor() -> None:
    model, processor = hf_tiny.model("llava"), hf_tiny.processor("llava")
    model.to(torch.bfloat16)
    compressor = hf_tiny.compressor(24, 12)
    hf.compress_llava(model, compressor, processor)
    assert compressor.conv.weight.dtype == torch.float32
    batch = hf_tiny.inputs(processor, [hf_tiny.image(40, 60)])
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    x, y = hf_tiny.projector_io(model, batch)
    assert x.dtype == y.dtype == torch.bfloat16 and y.shape == (1, 144, 32)
    with torch.no_grad():
        expected = hf.compressed_projector(model).projector(compressor(x))
    assert torch.equal(y, expected)
    with torch.no_grad():
        assert model(**batch).logits.dtype == torch.bfloat16
