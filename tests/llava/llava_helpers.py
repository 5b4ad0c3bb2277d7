"""Builders for tiny random LLaVA pieces (CLIP tower, Llama LM, tokenizer) used by the tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import transformers

from toconv import TokenCompressor

WIDTH = 32  # tiny CLIP width and LM width


def save_clip(path: Path, image_size: int) -> Path:
    """A 2-layer random ``CLIPVisionModel`` with its image processor, patch size 14."""
    config = transformers.CLIPVisionConfig(
        hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2,
        num_attention_heads=2, image_size=image_size, patch_size=14, projection_dim=WIDTH)
    torch.manual_seed(0)
    transformers.CLIPVisionModel(config).save_pretrained(path)
    transformers.CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


def save_compressor(path: Path, input_size: int, output_size: int, hidden_dim: int = WIDTH,
                    seed: int = 1) -> Path:
    """A toconv checkpoint with random (non-pooling) weights, so tests see its effect."""
    torch.manual_seed(seed)
    return TokenCompressor(input_size, output_size, hidden_dim, init="random").save_pretrained(path)


def tower_args(clip: Path, **fields: Any) -> SimpleNamespace:
    """LLaVA-style model arguments for ``build_vision_tower``."""
    base = dict(vision_tower=str(clip), mm_vision_tower=str(clip), mm_vision_select_layer=-2,
                mm_vision_select_feature="patch")
    return SimpleNamespace(**{**base, **fields})


def images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def llava_config(clip: Path, vocab_size: int = 128, **fields: Any) -> Any:
    """Config of a 2-layer ``LlavaLlamaForCausalLM`` whose tower is the tiny CLIP at ``clip``."""
    from llava.model import LlavaConfig

    base = dict(
        vocab_size=vocab_size, hidden_size=WIDTH, intermediate_size=2 * WIDTH,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=1024,
        mm_vision_tower=str(clip), mm_hidden_size=WIDTH, mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2, mm_vision_select_feature="patch", mm_patch_merge_type="flat",
        image_aspect_ratio="square", use_mm_proj=True)
    return LlavaConfig(**{**base, **fields})


def build_llava(config: Any, seed: int = 0) -> Any:
    """``LlavaLlamaForCausalLM`` from ``config`` with its vision tower loaded, in eval mode."""
    from llava.model import LlavaLlamaForCausalLM

    torch.manual_seed(seed)
    model = LlavaLlamaForCausalLM(config)
    model.get_vision_tower().load_model()
    newline = getattr(model.get_model(), "image_newline", None)
    if newline is not None:  # LLaVA allocates it with torch.empty and fills it only when training starts
        with torch.no_grad():
            newline.normal_(std=config.hidden_size**-0.5)
    return model.eval()


def save_tokenizer(path: Path) -> Path:
    """Train a tiny sentencepiece model and save it as a slow ``LlamaTokenizer``."""
    import sentencepiece as spm

    path.mkdir(parents=True, exist_ok=True)
    text = path / "corpus.txt"
    text.write_text("\n".join(["a photo of a cat on a mat", "a red car near a tree",
                               "the dog runs in the park", "two birds sit on a wire"] * 20))
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(path / "tokenizer"), vocab_size=60,
        model_type="bpe", hard_vocab_limit=False, bos_id=1, eos_id=2, unk_id=0, pad_id=-1)
    tok = transformers.LlamaTokenizer(vocab_file=str(path / "tokenizer.model"), legacy=True)
    tok.save_pretrained(path)
    return path
