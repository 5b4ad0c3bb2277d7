"""Ask a Hugging Face transformers LLaVA model about one image, with compressed image tokens.

Works with LLaVA-1.5 (``LlavaForConditionalGeneration``), LLaVA-NeXT and LLaVA-OneVision folders
or hub ids. ``--model`` is either a stock model plus ``--compressor`` (a toconv checkpoint trained
for its vision tower, e.g. ``python -m toconv.train encoder.name=<the model folder>``), or a folder
written by ``toconv.integrations.hf.save_pretrained`` (the compressor travels with it). Runs
offline on local folders.

    python examples/hf_llava_inference.py --model models/llava-1.5-7b-hf \\
        --compressor runs/<run>/best.safetensors --image photo.jpg --prompt "What is in the image?"

``--save DIR`` writes the compressed model (stock files, processor, compressor) for later
``toconv.integrations.hf.from_pretrained(DIR)``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from toconv.integrations import hf

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder or hub id")
    p.add_argument("--compressor", default=None,
                   help="toconv checkpoint (.safetensors); not needed for a saved compressed model")
    p.add_argument("--image", required=True)
    p.add_argument("--prompt", default="Describe the image briefly.")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="default: float16 on CUDA, float32 on CPU (the compressor keeps its own)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--save", default=None, help="write the compressed model folder here")
    return p.parse_args(argv)


def prompt_text(processor: object, prompt: str) -> str:
    """The processor's chat template with one image, else LLaVA-1.5's plain format."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return f"USER: <image>\n{prompt} ASSISTANT:"


def _is_compressed_folder(model: str) -> bool:
    config = Path(model) / "config.json"
    return config.is_file() and hf.CONFIG_FIELD in json.loads(config.read_text())


def main(argv: list[str] | None = None) -> str:
    """Generate an answer; prints it with the image token counts and returns it."""
    import transformers

    args = parse_args(argv)
    dtype = DTYPES[args.dtype or ("float16" if args.device.startswith("cuda") else "float32")]
    image = Image.open(args.image).convert("RGB")
    if _is_compressed_folder(args.model):
        model, processor = hf.from_pretrained(args.model, torch_dtype=dtype)
        stock_tokens = None
    else:
        if args.compressor is None:
            raise SystemExit(f"{args.model} is a stock model: pass --compressor <checkpoint>")
        model_type = transformers.AutoConfig.from_pretrained(args.model).model_type
        if model_type not in hf.MODEL_CLASSES:
            raise SystemExit(f"{args.model} is a {model_type!r} model; expected one of "
                             f"{sorted(hf.MODEL_CLASSES)}")
        model_class = getattr(transformers, hf.MODEL_CLASSES[model_type][0])
        model = model_class.from_pretrained(args.model, torch_dtype=dtype)
        processor = transformers.AutoProcessor.from_pretrained(args.model)
        stock = processor(images=[image], text=[prompt_text(processor, args.prompt)],
                          return_tensors="pt")
        stock_tokens = int((stock["input_ids"] == _image_token_id(model)).sum())
        hf.compress_llava(model, args.compressor, processor)
    model.to(args.device).eval()

    inputs = processor(images=[image], text=[prompt_text(processor, args.prompt)],
                       return_tensors="pt").to(args.device)
    inputs.pop("token_type_ids", None)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    wrapper = hf.compressed_projector(model)
    n_out = wrapper.output_grid_size
    tokens = int((inputs["input_ids"] == _image_token_id(model)).sum())
    print(f"compressor: {wrapper.compressor!r}; {n_out}x{n_out} tokens per tile")
    print(f"image tokens in the prompt: {tokens}"
          + (f" (stock model: {stock_tokens})" if stock_tokens is not None else ""))

    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=args.max_new_tokens)
    seconds = time.perf_counter() - start
    answer = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                    skip_special_tokens=True)[0].strip()
    print(answer)
    print(f"generate: {seconds:.2f} s on {args.device} ({dtype})")
    if args.save:
        hf.save_pretrained(model, args.save, processor)
        print(f"saved the compressed model to {args.save}")
    return answer


def _image_token_id(model: torch.nn.Module) -> int:
    config = model.config
    return getattr(config, "image_token_id", None) or config.image_token_index


if __name__ == "__main__":
    main()
