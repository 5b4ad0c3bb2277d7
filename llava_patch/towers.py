"""Vision towers with a :class:`~toconv.TokenCompressor` after LLaVA's frozen CLIP encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from llava.model.multimodal_encoder import clip_encoder
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from s2wrapper import forward as s2_forward
from torch import Tensor, nn

from llava_patch.config import CompressionArguments
from toconv.integrations import compress_patch_tokens, load_tower_compressor, tower_grid_side
from toconv.models import compressor_class
from toconv.models.io import read_config

#: Name of the compressor module inside the tower; its weights live under this key prefix.
COMPRESSOR_KEY = "token_compressor"
#: Persistent flag saved with the model: True once the compressor holds real weights.
LOADED_FLAG = "token_compressor_loaded"


class S2CLIPVisionTower(CLIPVisionTower):
    """Multi-scale (S2) CLIP tower on ``s2wrapper.forward`` for LLaVA releases that lack one.

    Images come in at the largest scale; each scale is cut into tiles of the smallest scale, run
    through CLIP and merged back to the base grid. Shapes: (B, 3, S, S) → (B, N, C · n_scales)
    with N the base-scale token count (plus CLS with ``cls_patch``).
    """

    def __init__(self, vision_tower: str, args: Any, delay_load: bool = False) -> None:
        self.s2_scales = CompressionArguments.from_config(args).scales
        super().__init__(vision_tower, args, delay_load)

    def load_model(self, device_map: Any = None) -> None:
        super().load_model(device_map=device_map)
        size = self.s2_scales[-1]
        self.image_processor.size["shortest_edge"] = size
        self.image_processor.crop_size["height"] = self.image_processor.crop_size["width"] = size

    @torch.no_grad()
    def forward(self, images: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
        if isinstance(images, list):
            return [self.forward(image.unsqueeze(0)) for image in images]
        prefix = int(self.select_feature == "cls_patch")
        return s2_forward(self._single_scale, images, img_sizes=self.s2_scales,
                          max_split_size=self.s2_scales[0], num_prefix_token=prefix)

    def _single_scale(self, images: Tensor) -> Tensor:
        out = self.vision_tower(images.to(device=self.device, dtype=self.dtype),
                                output_hidden_states=True)
        return self.feature_select(out).to(images.dtype)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size * len(self.s2_scales)


class CompressedTowerMixin:
    """Put before a LLaVA tower class: its features go through a trainable token compressor.

    The tower itself still runs under ``torch.no_grad()``; the compressor runs after it, so it can
    train. Features (B, N, C) → (B, out², C); a CLS token (``cls_patch``) passes through unchanged.
    ``num_patches`` / ``num_patches_per_side`` report the compressed grid while ``config``
    (``image_size``, ``patch_size``) stays CLIP's, so anyres tiling is unchanged.
    """

    def __init__(self, vision_tower: str, args: Any, delay_load: bool = False) -> None:
        self.compression = CompressionArguments.from_config(args)
        self._compressor_ready = False
        self._from_saved_model = delay_load
        if self.compression.s2:  # set before the base __init__, which may call load_model()
            self.s2_scales = self.compression.scales
            self.s2_split_size, self.s2_image_size = self.s2_scales[0], self.s2_scales[-1]
        super().__init__(vision_tower, args, delay_load)
        self._check_grid()
        cfg = self.compression
        self.token_compressor = _untrained_compressor(cfg, self.hidden_size)
        self.register_buffer(LOADED_FLAG, torch.tensor(False))
        self._register_load_state_dict_pre_hook(_mark_loaded_from_state_dict, with_module=True)
        print(f"[llava_patch] {type(self).__name__} {vision_tower}: {self.token_compressor}")
        if not delay_load:
            self._ensure_compressor_weights()

    def _check_grid(self) -> None:
        tower_grid_side(self.config.image_size, self.config.patch_size,
                        expected=self.compression.compression_input_size,
                        name="the vision tower (set compression_input_size to its grid side)")

    def load_model(self, device_map: Any = None) -> None:
        super().load_model(device_map=device_map)
        if COMPRESSOR_KEY in self._modules:
            self._ensure_compressor_weights()

    def _ensure_compressor_weights(self) -> None:
        """Keep weights that came with the model, else load ``compression_checkpoint``, else fail.

        A tower built fresh for training (not from a saved model) may start as average pooling.
        """
        ckpt = self.compression.compression_checkpoint
        if bool(getattr(self, LOADED_FLAG)) and not _on_meta(self.token_compressor):
            self.token_compressor.to(device=self.device, dtype=self.dtype)
            self._set_ready("weights from the model checkpoint")
        elif ckpt:
            self.load_compressor(ckpt)
        elif self._from_saved_model:
            raise ValueError(
                "token compressor weights were never loaded: the model checkpoint holds no "
                f"'{COMPRESSOR_KEY}' weights and compression_checkpoint is not set; expected one "
                "of them to provide the compressor")
        else:
            self.token_compressor.to(device=self.device, dtype=self.dtype)
            self._set_ready(f"untrained {self.token_compressor.family} start (no compression_checkpoint)")

    def load_compressor(self, path: str | Path) -> None:
        """Load a toconv checkpoint, checking geometry and width against this tower."""
        cfg = self.compression
        self.token_compressor = load_tower_compressor(
            path, cfg.compression_input_size, cfg.compression_output_size, self.hidden_size,
            device=self.device, dtype=self.dtype)
        self._set_ready(f"loaded from {path}")

    def save_compressor(self, path: str | Path) -> Path:
        """Write the compressor as a toconv safetensors checkpoint; returns the file."""
        return self.token_compressor.save_pretrained(path, metadata={"saved_by": "llava_patch"})

    def _set_ready(self, source: str) -> None:
        self.token_compressor.requires_grad_(not self.compression.freeze_token_compressor)
        getattr(self, LOADED_FLAG).fill_(True)
        self._compressor_ready = True
        print(f"[llava_patch] token compressor: {source}")

    def forward(self, images: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
        features = super().forward(images)
        if not self._compressor_ready:
            raise ValueError("token compressor has no weights yet: expected load_model() (or "
                             "LLaVA's load_pretrained_model) to load them before the forward pass")
        if isinstance(features, list):
            sizes = [f.shape[0] for f in features]
            return list(self._compress(torch.cat(features)).split(sizes))
        return self._compress(features)

    def _compress(self, features: Tensor) -> Tensor:
        """(B, [1+]N, C) → (B, [1+]M, C) in the features' dtype; the compressor runs in its own."""
        return compress_patch_tokens(self.token_compressor, features, self.select_feature == "cls_patch")

    @property
    def num_patches_per_side(self) -> int:
        return self.compression.compression_output_size

    @property
    def num_patches(self) -> int:
        return self.compression.compression_output_size ** 2


def _untrained_compressor(cfg: CompressionArguments, hidden_dim: int) -> nn.Module:
    """The tower's compressor before its weights arrive, of ``cfg.compression_family`` (None: the
    family of ``compression_checkpoint`` where that exists, else partial_conv)."""
    family = cfg.compression_family
    if family is None:
        try:
            family = read_config(cfg.compression_checkpoint)[1] if cfg.compression_checkpoint else None
        except FileNotFoundError:  # a saved model's config may name a checkpoint moved since
            family = None
    cls = compressor_class(family or "partial_conv")
    return cls.from_config(cls.config_class(input_grid_size=cfg.compression_input_size,
                                            output_grid_size=cfg.compression_output_size,
                                            hidden_dim=hidden_dim))


def _on_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def _mark_loaded_from_state_dict(module: nn.Module, state_dict: dict[str, Tensor], prefix: str,
                                 *args: Any) -> None:
    """A state dict that holds every compressor parameter also marks the compressor as loaded."""
    names = [f"{prefix}{COMPRESSOR_KEY}.{n}" for n, _ in module.token_compressor.named_parameters()]
    if all(n in state_dict for n in names):
        state_dict[prefix + LOADED_FLAG] = torch.tensor(True)


class CompressedCLIPVisionTower(CompressedTowerMixin, CLIPVisionTower):
    """LLaVA's ``CLIPVisionTower`` followed by a token compressor."""


def s2_tower_class() -> type[nn.Module]:
    """LLaVA's own ``CLIPVisionTowerS2`` when the installed release has it, else ours."""
    return getattr(clip_encoder, "CLIPVisionTowerS2", S2CLIPVisionTower)


def compressed_tower_class(settings: CompressionArguments) -> type[nn.Module]:
    """Tower class for the settings: compressed CLIP, or compressed S2 when ``s2`` is set."""
    if not settings.s2:
        return CompressedCLIPVisionTower
    base = s2_tower_class()
    return type(f"Compressed{base.__name__}", (CompressedTowerMixin, base),
                {"__doc__": f"{base.__name__} followed by a token compressor."})
