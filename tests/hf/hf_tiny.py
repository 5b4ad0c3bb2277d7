"""Tiny random LLaVA, LLaVA-NeXT and LLaVA-OneVision models and processors, built offline."""

from __future__ import annotations

from typing import Any

import torch

#: Image and video placeholder ids of the tiny tokenizer.
IMAGE_TOKEN_ID, VIDEO_TOKEN_ID = 4, 5
_WORDS = ["USER:", "ASSISTANT:", "describe", "the", "image", "video", "a", "photo", "and"]
VOCAB = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<video>", *_WORDS,
         *(f"w{i}" for i in range(64 - 6 - len(_WORDS)))]
#: Tile side (pixels) and patch size: CLIP towers give 24x24, SigLIP towers 55 // 2 = 27x27 (like
#: SigLIP 384/14, the last pixel row is dropped).
CLIP_SIZE, SIGLIP_SIZE, PATCH = 48, 55, 2


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
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  patch_size=PATCH)
    if tower == "clip":
        return dict(model_type="clip_vision_model", image_size=CLIP_SIZE, **common)
    return dict(model_type="siglip_vision_model", image_size=SIGLIP_SIZE, **common)


TEXT_CONFIG = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=2, vocab_size=len(VOCAB),
                   max_position_embeddings=8192, pad_token_id=0, bos_token_id=2, eos_token_id=3)


def pinpoints(kind: str) -> list[list[int]]:
    """NeXT: up to 3 tiles of 48 px; OneVision: up to 4x4 tiles of 55 px (past anyres_max_9)."""
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
    side = CLIP_SIZE if tower == "clip" else SIGLIP_SIZE
    extra = int(tower == "clip")  # the CLS token
    tok = tokenizer()
    if kind == "llava":
        images = _image_processor("CLIPImageProcessor", size={"shortest_edge": side},
                                  crop_size={"height": side, "width": side})
        return transformers.LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=PATCH,
                                           vision_feature_select_strategy=strategy,
                                           num_additional_image_tokens=extra)
    if kind == "llava_next":
        images = _image_processor("LlavaNextImageProcessor", size={"shortest_edge": side},
                                  crop_size={"height": side, "width": side},
                                  image_grid_pinpoints=pinpoints(kind))
        return transformers.LlavaNextProcessor(image_processor=images, tokenizer=tok,
                                               patch_size=PATCH,
                                               vision_feature_select_strategy=strategy,
                                               num_additional_image_tokens=extra)
    images = _image_processor("LlavaOnevisionImageProcessor", size={"height": side, "width": side},
                              image_grid_pinpoints=pinpoints(kind))
    grid = side // PATCH
    return transformers.LlavaOnevisionProcessor(
        image_processor=images, tokenizer=tok, video_processor=video_processor(side),
        num_image_tokens=grid**2, vision_feature_select_strategy=strategy)


def video_processor(side: int) -> Any:
    import transformers

    return transformers.LlavaOnevisionVideoProcessor(size={"height": side, "width": side})
