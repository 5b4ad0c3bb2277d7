"""Compressor checkpoints: one safetensors file whose metadata carries the family and its config."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

WEIGHTS_NAME = "model.safetensors"
CONFIG_KEY = "toconv_config"
FAMILY_KEY = "toconv_family"
#: Family of checkpoints written before families existed.
LEGACY_FAMILY = "partial_conv"


class ConfigDict:
    """``to_dict`` / ``from_dict`` of a family's config dataclass; ``from_dict`` names the keys it
    does not know and those it expects."""

    config_name: ClassVar[str] = "compressor"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.config_name} config keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)


def write_checkpoint(module: nn.Module, path: str | Path, metadata: dict[str, str]) -> Path:
    """Write ``module``'s weights with string ``metadata`` as safetensors: ``path`` ending in
    ``.safetensors`` is the file itself, otherwise a folder that receives ``model.safetensors``.
    Returns the file written."""
    file = Path(path)
    if file.suffix != ".safetensors":
        file.mkdir(parents=True, exist_ok=True)
        file = file / WEIGHTS_NAME
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(file), metadata=metadata)
    return file


def weights_file(path: str | Path) -> Path:
    """The checkpoint file of ``path`` (a ``.safetensors`` file, or a folder holding ``model.safetensors``)."""
    file = Path(path)
    if file.is_dir():
        file = file / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no toconv checkpoint at {file} (expected a .safetensors file or a "
                                f"folder holding {WEIGHTS_NAME})")
    return file


def read_metadata(path: str | Path) -> tuple[Path, dict[str, str]]:
    """(file, safetensors metadata); ``ValueError`` when the file is not safetensors."""
    file = weights_file(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            return file, f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for foreign files
        hint = (" (a torch pickle? load it with torch.load and write it with save_pretrained)"
                if file.suffix in (".pt", ".pth", ".bin", ".ckpt") else "")
        raise ValueError(f"{file} is not a safetensors file{hint}: toconv checkpoints are "
                         f"safetensors files written by save_pretrained "
                         f"({type(err).__name__}: {err})") from None


def read_config(path: str | Path) -> tuple[Path, str, dict[str, Any]]:
    """(file, family, config dict) of a toconv checkpoint."""
    file, meta = read_metadata(path)
    if CONFIG_KEY not in meta:
        raise ValueError(f"{file} is a safetensors file but not a toconv checkpoint: its metadata has "
                         f"no {CONFIG_KEY!r}")
    return file, meta.get(FAMILY_KEY, LEGACY_FAMILY), json.loads(meta[CONFIG_KEY])
