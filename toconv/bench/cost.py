"""Cost figures: compressor CPU time, encoder forward time, LLM prefill, GPU throughput."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def reducer_ms_per_image(reduce: Callable[[Tensor], Tensor], tokens: Tensor, repeats: int) -> float:
    """CPU milliseconds per image of ``reduce`` on a (B, N, C) batch."""
    with torch.no_grad():
        return median_ms(lambda: reduce(tokens), repeats) / tokens.shape[0]


def encoder_ms_per_image(encoder_name: str, num_images: int, repeats: int) -> dict[str, object]:
    """CPU milliseconds per image of the frozen encoder's forward on random pixels.

    Returns ``{"ms_per_image": float}`` or ``{"skipped": reason}`` when the encoder cannot be built.
    """
    from toconv.encoders import build_encoder

    try:
        encoder = build_encoder(encoder_name, device="cpu", dtype=torch.float32)
    except (ImportError, OSError, ValueError) as err:
        return {"skipped": f"encoder {encoder_name!r} unavailable: {err}"}
    pixels = torch.rand(num_images, 3, encoder.image_size, encoder.image_size)
    with torch.no_grad():
        ms = median_ms(lambda: encoder.encode(pixels), repeats)
    return {"ms_per_image": ms / num_images, "images": num_images, "encoder": encoder_name}


@dataclass(frozen=True)
class LMShape:
    """A Llama-architecture language model's size (defaults: Vicuna-7B, LLaVA-1.5's LM)."""

    layers: int = 32
    hidden: int = 4096
    heads: int = 32
    intermediate: int = 11008
    vocab: int = 32000
    kv_bytes: int = 2  # fp16

    def prefill_flops(self, tokens: int) -> int:
        """Prefill FLOPs: all linear layers for every token, attention scores and weighted sums
        over the causal half, and the LM head for the last token only."""
        linear = self.layers * (4 * self.hidden**2 + 3 * self.hidden * self.intermediate)
        attention = self.layers * 2 * tokens * (tokens + 1) // 2 * self.hidden * 2
        return 2 * linear * tokens + attention + 2 * self.hidden * self.vocab

    def kv_cache_bytes(self, tokens: int) -> int:
        return 2 * self.layers * tokens * self.hidden * self.kv_bytes


def vicuna7b_savings(image_tokens: list[int], text_tokens: int) -> list[dict[str, float]]:
    """Analytic prefill FLOPs and fp16 KV-cache size of Vicuna-7B per image-token count."""
    lm = LMShape()
    base = lm.prefill_flops(image_tokens[0] + text_tokens)
    return [{"image_tokens": n, "tokens": n + text_tokens,
             "prefill_tflops": lm.prefill_flops(n + text_tokens) / 1e12,
             "prefill_ratio": lm.prefill_flops(n + text_tokens) / base,
             "kv_cache_mib": lm.kv_cache_bytes(n + text_tokens) / 2**20} for n in image_tokens]


def llama_prefill_times(image_tokens: list[int], text_tokens: int, repeats: int,
                        seed: int = 0) -> dict[str, object]:
    """CPU prefill time of a small randomly initialised LlamaForCausalLM (LLaVA's LM family).

    Image tokens are fed as embeddings before ``text_tokens`` random text ids, one image.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376,
                         num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                         max_position_embeddings=2048)
    model = LlamaForCausalLM(config).eval()
    text = torch.randint(config.vocab_size, (1, text_tokens))
    rows = []
    with torch.no_grad():
        text_embeds = model.get_input_embeddings()(text)
        for n in image_tokens:
            embeds = torch.cat([torch.randn(1, n, config.hidden_size) * 0.02, text_embeds], dim=1)
            ms = median_ms(lambda e=embeds: model(inputs_embeds=e, use_cache=True), repeats)
            rows.append({"image_tokens": n, "tokens": n + text_tokens, "prefill_ms": ms})
    for row in rows:
        row["ratio"] = row["prefill_ms"] / rows[0]["prefill_ms"]
    shape = {k: getattr(config, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "vocab_size")}
    return {"model": shape, "params": sum(p.numel() for p in model.parameters()), "rows": rows}


def clip_gpu_throughput(output_sizes: list[int], batch_size: int, seconds: float = 5.0) -> dict[str, object]:
    """Images/s of a random-weight CLIP-L/336 vision tower at bf16 on CUDA, with and without
    a ToConv compressor on its layer −2 patch tokens. Skipped (with the reason) without CUDA."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device in this run"}
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from toconv import TokenCompressor

    device, dtype = torch.device("cuda"), torch.bfloat16
    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14)
    tower = CLIPVisionModel(config).to(device, dtype).eval()
    pixels = torch.randn(batch_size, 3, 336, 336, device=device, dtype=dtype)

    def throughput(compressor: torch.nn.Module | None) -> float:
        def step() -> None:
            states = tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
            if compressor is not None:
                compressor(states)

        with torch.no_grad():
            step()
            torch.cuda.synchronize()
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                step()
                count += 1
            torch.cuda.synchronize()
            return count * batch_size / (time.perf_counter() - started)

    rows = [{"compressor": "none", "images_per_s": throughput(None)}]
    grid = config.image_size // config.patch_size
    for out in output_sizes:
        compressor = TokenCompressor(grid, out, hidden_dim=config.hidden_size).to(device, dtype).eval()
        rows.append({"compressor": compressor.geometry.name, "images_per_s": throughput(compressor)})
    return {"device": torch.cuda.get_device_name(device), "batch_size": batch_size, "rows": rows}
