"""Tiny random LLaVA, LLaVA-NeXT and LLaVA-OneVision models and processors, built offline."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

MIN_TRANSFORMERS = "4.49"
KINDS = ["llava", "llava_next", "llava_onevision"]
#: Tower grid side of each tiny model: CLIP 48 px / patch 2 = 24, SigLIP 223 px // 8 = 27.
GRID = {"llava": 24, "llava_next": 24, "llava_onevision": 27}


def require_transformers() -> ModuleType:
    """``import transformers``, or skip the calling test module when it is missing or too old."""
    return pytest.importorskip(
        "transformers", minversion=MIN_TRANSFORMERS,
        reason=f"the Hugging Face integration needs transformers >= {MIN_TRANSFORMERS}")

#: Image and video placeholder ids of the tiny tokenizer.
IMAGE_TOKEN_ID, VIDEO_TOKEN_ID = 4, 5
_WORDS = ["USER:", "ASSISTANT:", "describe", "the", "image", "video", "a", "photo", "and"]
VOCAB = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<video>", *_WORDS,
         *(f"w{i}" for i in range(64 - 6 - len(_WORDS)))]
#: Tile side (pixels) and patch size: CLIP towers 48 / 2 = 24x24; SigLIP towers 223 // 8 = 27x27
#: (like SigLIP 384/14, the last pixels are dropped, and 27 -> 14 is expressible: 223 // 15 = 14).
CLIP_SIZE, CLIP_PATCH, SIGLIP_SIZE, SIGLIP_PATCH = 48, 2, 223, 8


def tokenizer() -> Any:
    """A word-level fast tokenizer over :data:`VOCAB` (64 ids) with ``<image>`` and ``<video>``."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
        eos_token="</s>", additional_special_tokens=["<image>", "<video>"])


def vision_config(tower: str = "clip") -> dict[str, Any]:
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    if tower == "clip":
        return dict(model_type="clip_vision_model", image_size=CLIP_SIZE, patch_size=CLIP_PATCH,
                    **common)
    return dict(model_type="siglip_vision_model", image_size=SIGLIP_SIZE, patch_size=SIGLIP_PATCH,
                **common)


def tile_side(kind: str) -> int:
    """Pixels per tile side of the tiny ``kind`` model."""
    return SIGLIP_SIZE if kind == "llava_onevision" else CLIP_SIZE


TEXT_CONFIG = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=2, vocab_size=len(VOCAB),
                   max_position_embeddings=8192, pad_token_id=0, bos_token_id=2, eos_token_id=3)


def pinpoints(kind: str) -> list[list[int]]:
    """NeXT: up to 3 tiles of 48 px; OneVision: up to 4x4 tiles of 223 px (past anyres_max_9)."""
    if kind == "llava_next":
        s = CLIP_SIZE
        return [[s, s], [s, 2 * s], [2 * s, s], [2 * s, 2 * s], [s, 3 * s], [3 * s, s]]
    s = SIGLIP_SIZE
    return [[s * i, s * j] for i in range(1, 5) for j in range(1, 5)]


def model(kind: str, tower: str | None = None, strategy: str | None = None,
          layer: int | list[int] = -2, seed: int = 0) -> Any:
    """A random tiny model: ``kind`` is ``llava``, ``llava_next`` or ``llava_onevision``."""
    import transformers

    tower = tower or ("siglip" if kind == "llava_onevision" else "clip")
    strategy = strategy or ("full" if tower == "siglip" else "default")
    kwargs: dict[str, Any] = dict(vision_config=vision_config(tower), text_config=dict(TEXT_CONFIG),
                                  image_token_index=IMAGE_TOKEN_ID, vision_feature_layer=layer,
                                  vision_feature_select_strategy=strategy)
    if kind != "llava":
        kwargs["image_grid_pinpoints"] = pinpoints(kind)
    if kind == "llava_onevision":
        kwargs["video_token_index"] = VIDEO_TOKEN_ID
    config_class = {"llava": "LlavaConfig", "llava_next": "LlavaNextConfig",
                    "llava_onevision": "LlavaOnevisionConfig"}[kind]
    config = getattr(transformers, config_class)(**kwargs)
    torch.manual_seed(seed)
    model_class = {"llava": "LlavaForConditionalGeneration",
                   "llava_next": "LlavaNextForConditionalGeneration",
                   "llava_onevision": "LlavaOnevisionForConditionalGeneration"}[kind]
    return getattr(transformers, model_class)(config).eval()


def _image_processor(name: str, **kwargs: Any) -> Any:
    """The PIL (slow) image processor: no torchvision needed in transformers 4.49 or 5."""
    import transformers

    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    return cls(**kwargs)


def processor(kind: str, tower: str | None = None, strategy: str | None = None) -> Any:
    """The stock processor of :func:`model` with the same arguments."""
    import transformers

    tower = tower or ("siglip" if kind == "llava_onevision" else "clip")
    strategy = strategy or ("full" if tower == "siglip" else "default")
    side, patch = (CLIP_SIZE, CLIP_PATCH) if tower == "clip" else (SIGLIP_SIZE, SIGLIP_PATCH)
    extra = int(tower == "clip")  # the CLS token
    tok = tokenizer()
    if kind == "llava":
        images = _image_processor("CLIPImageProcessor", size={"shortest_edge": side},
                                  crop_size={"height": side, "width": side})
        return transformers.LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=patch,
                                           vision_feature_select_strategy=strategy,
                                           num_additional_image_tokens=extra)
    if kind == "llava_next":
        images = _image_processor("LlavaNextImageProcessor", size={"shortest_edge": side},
                                  crop_size={"height": side, "width": side},
                                  image_grid_pinpoints=pinpoints(kind))
        return transformers.LlavaNextProcessor(image_processor=images, tokenizer=tok,
                                               patch_size=patch,
                                               vision_feature_select_strategy=strategy,
                                               num_additional_image_tokens=extra)
    images = _image_processor("LlavaOnevisionImageProcessor", size={"height": side, "width": side},
                              image_grid_pinpoints=pinpoints(kind))
    grid = side // patch
    kwargs = dict(image_processor=images, tokenizer=tok, num_image_tokens=grid**2,
                  vision_feature_select_strategy=strategy)
    if has_video_processor():
        return transformers.LlavaOnevisionProcessor(
            video_processor=transformers.LlavaOnevisionVideoProcessor(
                size={"height": side, "width": side}), **kwargs)
    return _onevision_without_video()(video_processor=None, **kwargs)


def loaded_processor(kind: str, folder: Any, strategy: str | None = None) -> Any:
    """The processor a user gets from ``folder`` (``AutoProcessor``, transformers' default image
    backend); where the folder holds only the image processor (OneVision on transformers 5
    without torchvision), :func:`processor` with the folder's ``AutoImageProcessor``."""
    import transformers

    if (Path(folder) / "processor_config.json").is_file() or kind != "llava_onevision":
        return transformers.AutoProcessor.from_pretrained(folder)
    loaded = processor(kind, strategy=strategy)
    loaded.image_processor = transformers.AutoImageProcessor.from_pretrained(folder)
    return loaded


def has_video_processor() -> bool:
    """True where transformers can build a OneVision video processor (5.x needs torchvision)."""
    import transformers

    try:
        transformers.LlavaOnevisionVideoProcessor()
    except ImportError:
        return False
    return True


def _onevision_without_video() -> type:
    """``LlavaOnevisionProcessor`` accepting ``video_processor=None``.

    transformers 5 builds the OneVision video processor only with torchvision, and refuses a
    processor without one. The image and video token counts under test are still the stock
    class's own code (``replace_image_token``, ``replace_video_token``); only saving and
    ``AutoProcessor`` loading need the real video processor.
    """
    import transformers

    class OnevisionProcessorWithoutVideo(transformers.LlavaOnevisionProcessor):
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    return OnevisionProcessorWithoutVideo


def compressor(n_in: int, n_out: int, width: int = 32, seed: int = 0) -> Any:
    """A randomly initialised :class:`toconv.TokenCompressor` (not the average-pooling start)."""
    from toconv import TokenCompressor

    torch.manual_seed(seed)
    return TokenCompressor(n_in, n_out, hidden_dim=width, init="random")


def image(height: int, width: int, seed: int = 0) -> Any:
    """A random RGB PIL image of ``height`` x ``width`` pixels."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def inputs(processor: Any, images: list | None = None, text: str = "USER: <image> describe the image",
           videos: list | None = None) -> dict[str, Any]:
    """The processor's tensors for one prompt (without ``token_type_ids``, which LLaVA ignores)."""
    kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
    if images is not None:
        kwargs["images"] = images
    if videos is not None:
        kwargs["videos"] = videos
    out = dict(processor(**kwargs))
    out.pop("token_type_ids", None)
    return out


def count(batch: dict[str, Any], token_id: int = IMAGE_TOKEN_ID) -> int:
    return int((batch["input_ids"] == token_id).sum())


def packed_count(model: Any, batch: dict[str, Any], method: str = "pack_image_features") -> int:
    """Run ``model(**batch)`` and return how many feature rows ``method`` handed to the LM.

    ``method`` is ``pack_image_features`` (NeXT and OneVision images: sum of ``feature_lens``) or
    ``apply_pooling`` (OneVision video frames: frames x pooled tokens).
    """
    from toconv.integrations.hf import _owner

    owner = _owner(model)
    original, overridden = getattr(owner, method), method in owner.__dict__
    seen: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        seen.append(int(out[1].sum()) if method == "pack_image_features" else out.shape[0] * out.shape[1])
        return out

    setattr(owner, method, spy)
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        if overridden:
            setattr(owner, method, original)
        else:
            del owner.__dict__[method]
    return sum(seen)


def projector_io(model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, output)`` of the model's ``multi_modal_projector`` in ``model(**batch)``."""
    from toconv.integrations.hf import _owner

    seen: dict[str, torch.Tensor] = {}

    def hook(module: Any, args: tuple, output: torch.Tensor) -> None:
        seen["in"], seen["out"] = args[0].detach(), output.detach()

    handle = _owner(model).multi_modal_projector.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        handle.remove()
    return seen["in"], seen["out"]
