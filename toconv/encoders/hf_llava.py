"""The vision tower of a transformers LLaVA model, giving exactly the tokens its projector reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import safe_open
from torch import Tensor

from toconv.encoders.base import EncoderOutput, FrozenEncoder, resolve_dtype

#: ``config.json`` model types routed here by :func:`toconv.encoders.build_encoder`.
LLAVA_MODEL_TYPES = ("llava", "llava_next", "llava_onevision")
_TOWER_PREFIX = "vision_tower."


def llava_model_type(source: str | Path) -> str | None:
    """The LLaVA ``model_type`` in the config.json of a model folder, or of a hub id already in
    the local Hugging Face cache (never the network); None when it is not a LLaVA model."""
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            file = path / "config.json"
        else:
            from huggingface_hub import hf_hub_download

            file = Path(hf_hub_download(str(source), "config.json", local_files_only=True))
        model_type = json.loads(file.read_text()).get("model_type")
    except Exception:  # noqa: BLE001 - any unreadable source is "not a LLaVA model"
        return None
    return model_type if model_type in LLAVA_MODEL_TYPES else None


def is_llava_source(source: str | Path) -> bool:
    """True for a LLaVA model folder, or a hub id whose cached config is LLaVA's or (not cached)
    whose name contains "llava" (as llava-hf's do); other names stay CLIP towers."""
    if llava_model_type(source) is not None:
        return True
    name = str(source)
    hub_id = (isinstance(source, str) and not name.startswith((".", "/", "~"))
              and not Path(name).expanduser().exists())
    return hub_id and "llava" in name.lower()


class HFLlavaEncoder(FrozenEncoder):
    """The vision tower of a ``Llava``/``LlavaNext``/``LlavaOnevision`` model folder or hub id.

    Only the tower's weights are read (the language model is never loaded). Features follow the
    model's config: hidden state(s) of ``vision_feature_layer`` (a list is concatenated along
    channels, so ``hidden_dim`` = tower width × len(list)), then ``vision_feature_select_strategy``
    ('default' drops the CLS token). ``patch_tokens`` (B, N, C) are exactly the grid tokens the
    model's projector reads, N = (image_size // patch_size)²; ``cls_token`` (B, C) is the tower's
    CLS token, or, for towers without one (SigLIP), the mean of the patch tokens.

    :meth:`preprocess` is the model's own image processor (the backend a toconv-saved folder
    recorded, else transformers' default, as ``AutoProcessor`` loads it); for NeXT and OneVision
    (tiled "anyres" inputs) it returns the first tile, the whole image at the tower's resolution.
    """

    def __init__(self, source: str | Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype | str | None = None, name: str | None = None) -> None:
        from transformers import AutoConfig, AutoModel

        from toconv.integrations.hf import llava_layout, load_image_processor

        self.name = name or str(source)
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        config = AutoConfig.from_pretrained(source)
        self.layout = llava_layout(config)
        self.feature_layers = config.vision_feature_layer
        self.select_strategy = config.vision_feature_select_strategy
        self.image_size = self.layout.image_size
        self.grid_size = self.layout.grid
        self.hidden_dim = self.layout.width
        self.processor = load_image_processor(source, config)
        tower = AutoModel.from_config(config.vision_config)
        missing, _ = tower.load_state_dict(_tower_state_dict(source), strict=False)
        if missing:
            raise ValueError(f"{self.name}: the checkpoint has no weights for the vision tower's "
                             f"{missing[:3]}{' ...' if len(missing) > 3 else ''}")
        self.model = tower.to(self.device, self.dtype).eval().requires_grad_(False)

    def preprocess(self, images: list[Image.Image]) -> Tensor:
        """PIL images → (B, 3, S, S) float32: the model's image processor (first tile for NeXT and
        OneVision)."""
        pixels = self.processor(images=[im.convert("RGB") for im in images],
                                return_tensors="pt")["pixel_values"]
        return (pixels[:, 0] if pixels.ndim == 5 else pixels).float()

    @torch.no_grad()
    def encode(self, pixel_values: Tensor) -> EncoderOutput:
        """(B, 3, S, S) → patch tokens (B, N, C) and CLS token (B, C), as the projector sees them."""
        self.check_pixels(pixel_values)
        hidden = self.model(pixel_values=pixel_values.to(self.device, self.dtype),
                            output_hidden_states=True).hidden_states
        layers = [self.feature_layers] if isinstance(self.feature_layers, int) else self.feature_layers
        tokens = torch.cat([hidden[i] for i in layers], dim=-1)
        n = self.num_patches
        if self.select_strategy == "default":
            cls, patches = tokens[:, 0], tokens[:, 1:]
        elif tokens.shape[1] == n + 1:
            cls, patches = tokens[:, 0], tokens[:, 1:]
        else:
            patches = tokens
            cls = patches.mean(dim=1)
        if patches.shape[1] != n:
            raise ValueError(f"{self.name}: the projector reads {patches.shape[1]} tokens, expected "
                             f"the {self.grid_size}x{self.grid_size} grid ({n}); a tower without "
                             f"CLS needs vision_feature_select_strategy='full'")
        return EncoderOutput(patch_tokens=patches, cls_token=cls)


def _tower_state_dict(source: str | Path) -> dict[str, Tensor]:
    """The vision tower's weights from the model's safetensors (sharded or not), keys relative to
    the tower (whatever precedes ``vision_tower.``: ``model.`` in transformers 5, nothing before)."""
    files = _weight_files(source)
    state: dict[str, Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if _TOWER_PREFIX in key:
                    state[key.split(_TOWER_PREFIX, 1)[1]] = f.get_tensor(key)
    if not state:
        raise ValueError(f"{source}: no '{_TOWER_PREFIX}*' weights in {[f.name for f in files]}")
    return state


def _weight_files(source: str | Path) -> list[Path]:
    """Safetensors files of a folder or hub id that hold vision-tower weights."""
    folder = Path(source).expanduser()

    def fetch(filename: str) -> Path | None:
        if folder.is_dir():
            return folder / filename if (folder / filename).is_file() else None
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(str(source), filename))
        except Exception:  # noqa: BLE001 - the caller reports what is missing
            return None

    index = fetch("model.safetensors.index.json")
    if index is not None:
        weight_map: dict[str, Any] = json.loads(index.read_text())["weight_map"]
        shards = sorted({shard for key, shard in weight_map.items() if _TOWER_PREFIX in key})
        return [path for shard in shards if (path := fetch(shard)) is not None]
    single = fetch("model.safetensors")
    if single is None:
        raise FileNotFoundError(f"{source}: expected model.safetensors or "
                                f"model.safetensors.index.json (safetensors weights)")
    return [single]
