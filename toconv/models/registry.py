"""Compressor families and their named configurations (``create_compressor("clip-l336-24to12")``).

A family is a compressor class registered with :func:`register_compressor`; its checkpoints store
the family name, and :func:`load_compressor` dispatches on it (as transformers does with
``architectures``). Named configurations are (family, config) pairs registered with
:func:`register_preset`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from toconv.models.io import read_config
from toconv.registry import Registry

T = TypeVar("T", bound=type[nn.Module])

FAMILIES: Registry[type[nn.Module]] = Registry("compressor family", attribute="family")
PRESETS: Registry[tuple[str, dict[str, Any]]] = Registry("preset")


def register_compressor(family: str) -> Callable[[T], T]:
    """Class decorator: register a compressor family under ``family`` (sets ``cls.family``).

    The class provides ``config_class`` (with ``from_dict``), ``from_config`` and
    ``from_pretrained(path, map_location, **expected)``.
    """
    return FAMILIES.decorator(family)


def compressor_class(family: str) -> type[nn.Module]:
    return FAMILIES.get(family)


def list_families() -> list[str]:
    return FAMILIES.names()


def register_preset(name: str, family: str, **config: Any) -> None:
    """Add a named configuration of ``family``; names are unique."""
    PRESETS.add(name, (family, config))


def list_presets() -> list[str]:
    """Names accepted by :func:`create_compressor`."""
    return PRESETS.names()


def create_compressor(name: str, **overrides: Any) -> nn.Module:
    """Build a compressor from a named preset; keyword arguments override config fields."""
    family, config = PRESETS.get(name)
    cls = compressor_class(family)
    return cls.from_config(cls.config_class.from_dict({**config, **overrides}))


def load_compressor(path: str | Path, map_location: str | torch.device = "cpu", **expected: Any) -> nn.Module:
    """Load any registered family's checkpoint (file or folder); ``expected`` config fields are checked."""
    _, family, _ = read_config(path)
    return compressor_class(family).from_pretrained(path, map_location=map_location, **expected)
