"""Ask a LLaVA model with a compressed vision tower about one image.

The model folder's ``config.json`` carries ``use_token_compression`` and the compressor geometry
(written by ``python -m llava_patch.train``); ``llava_patch.apply()`` must run before loading.

    python examples/llava_inference.py --model-path checkpoints/llava-v1.5-7b-toconv12 \\
        --image toconv/photos/images/<file>.jpg --prompt "What is in the image?"

For a stage-1 output folder (projector + compressor only) add ``--model-base lmsys/vicuna-7b-v1.5``.
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image

import llava_patch

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-path", required=True)
    p.add_argument("--model-base", default=None, help="base LM for projector-only folders")
    p.add_argument("--image", required=True)
    p.add_argument("--prompt", default="Describe the image briefly.")
    p.add_argument("--conv-mode", default="llava_v1", help="LLaVA conversation template")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="default: float16 on CUDA, float32 on CPU")
    p.add_argument("--max-new-tokens", type=int, default=64)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    llava_patch.apply()
    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token
    from llava.model.builder import load_pretrained_model

    dtype = DTYPES[args.dtype or ("float16" if args.device.startswith("cuda") else "float32")]
    name = get_model_name_from_path(args.model_path)
    tokenizer, model, processor, _ = load_pretrained_model(args.model_path, args.model_base, name,
                                                           device=args.device)
    model.to(dtype=dtype)
    tower = model.get_vision_tower()
    print(f"vision tower: {type(tower).__name__}, {tower.num_patches} image tokens per view")

    conv = conv_templates[args.conv_mode].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{args.prompt}")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX,
                                return_tensors="pt").unsqueeze(0).to(args.device)
    image = Image.open(args.image).convert("RGB")
    pixels = process_images([image], processor, model.config).to(args.device, dtype=dtype)

    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False,
                             max_new_tokens=args.max_new_tokens, use_cache=True)
    seconds = time.perf_counter() - start
    print(tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip())
    print(f"generate: {seconds:.2f} s on {args.device} ({dtype})")


if __name__ == "__main__":
    main()
