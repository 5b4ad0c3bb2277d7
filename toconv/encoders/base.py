"""Common interface of the frozen vision encoders."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """``None`` -> float32 on CPU and float16 elsewhere; strings like ``"bf16"`` are accepted."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.float16
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"expected a torch dtype or one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize of the shorter side to ``size``, then a centred ``size``×``size`` crop (what
    the encoders and CLIP's image processor feed the model; also the photo shown in plots)."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.convert("RGB").resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


@dataclass
class EncoderOutput:
    """Encoder tokens: ``patch_tokens`` (B, N, C), grid row-major, and ``cls_token`` (B, C)."""

    patch_tokens: Tensor
    cls_token: Tensor


class FrozenEncoder(ABC):
    """A pretrained vision encoder used as a fixed feature extractor (eval mode, no gradients).

    Subclasses set ``name``, ``image_size``, ``grid_size``, ``hidden_dim``, ``device`` and ``dtype``
    and implement :meth:`preprocess` and :meth:`encode`.
    """

    name: str
    image_size: int
    grid_size: int
    hidden_dim: int
    device: torch.device
    dtype: torch.dtype

    @property
    def num_patches(self) -> int:
        """Patch tokens per image, ``grid_size ** 2``."""
        return self.grid_size**2

    @abstractmethod
    def preprocess(self, images: list[Image.Image]) -> Tensor:
        """The encoder's own preprocessing: PIL images -> (B, 3, S, S) float32 on CPU."""

    @abstractmethod
    def encode(self, pixel_values: Tensor) -> EncoderOutput:
        """Pixel values (B, 3, S, S) -> tokens on ``device`` in ``dtype``, without gradients."""

    def __call__(self, images: list[Image.Image] | Tensor) -> EncoderOutput:
        """Encode PIL images or already preprocessed pixel values (B, 3, S, S)."""
        pixels = images if isinstance(images, Tensor) else self.preprocess(images)
        return self.encode(pixels)

    def check_pixels(self, pixel_values: Tensor) -> None:
        """Raise ValueError unless ``pixel_values`` is (B, 3, image_size, image_size)."""
        expected = (3, self.image_size, self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"{self.name}: expected pixel values (B, {', '.join(map(str, expected))}), "
                f"got {tuple(pixel_values.shape)}"
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, image_size={self.image_size}, "
            f"grid_size={self.grid_size}, hidden_dim={self.hidden_dim}, device={self.device}, "
            f"dtype={self.dtype})"
        )
