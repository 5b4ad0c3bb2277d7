"""CLIP vision towers through Hugging Face transformers, LLaVA-style feature selection."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from toconv.encoders.base import EncoderOutput, FrozenEncoder, resolve_dtype


class HFCLIPEncoder(FrozenEncoder):
    """A ``CLIPVisionModel`` with its ``CLIPImageProcessor``; features are one hidden layer.

    ``select_layer=-2`` and dropping the CLS token reproduce LLaVA's ``mm_vision_select_layer=-2``
    and ``mm_vision_select_feature='patch'``. ``source`` is a hub id or a local model folder.
    """

    def __init__(
        self,
        source: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str | None = None,
        select_layer: int = -2,
        name: str | None = None,
    ) -> None:
        from transformers import CLIPImageProcessor, CLIPVisionModel

        self.name = name or str(source)
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.select_layer = select_layer
        self.processor = CLIPImageProcessor.from_pretrained(source)
        model = CLIPVisionModel.from_pretrained(source)
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        config = model.config
        if config.image_size % config.patch_size:
            raise ValueError(
                f"{self.name}: image_size {config.image_size} is not a multiple of "
                f"patch_size {config.patch_size}"
            )
        self.image_size = config.image_size
        self.grid_size = config.image_size // config.patch_size
        self.hidden_dim = config.hidden_size
        crop = self.processor.crop_size
        crop = (crop, crop) if isinstance(crop, int) else (crop["height"], crop["width"])
        if crop != (self.image_size, self.image_size):
            raise ValueError(
                f"{self.name}: the image processor crops to {crop} but the model "
                f"expects {self.image_size}x{self.image_size} pixels"
            )

    def preprocess(self, images: list[Image.Image]) -> Tensor:
        """PIL images -> (B, 3, S, S) float32 (resize, center crop, CLIP mean/std)."""
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        return pixels.float()

    @torch.no_grad()
    def encode(self, pixel_values: Tensor) -> EncoderOutput:
        """(B, 3, S, S) -> patch tokens (B, N, C) and CLS token (B, C) of ``select_layer``."""
        self.check_pixels(pixel_values)
        pixels = pixel_values.to(self.device, self.dtype)
        hidden = self.model(pixel_values=pixels, output_hidden_states=True).hidden_states
        features = hidden[self.select_layer]
        return EncoderOutput(patch_tokens=features[:, 1:], cls_token=features[:, 0])
