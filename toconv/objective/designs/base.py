"""The design interface and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from toconv.geometry import RFGeometry
from toconv.recipes import CriticSpec, DecoderSpec
from toconv.registry import Registry

D = TypeVar("D", bound=type["Design"])


class Design(ABC):
    """One way of training a compressor: which real tokens the critic sees, which originals the
    decoder rebuilds, and the two modules that do it, for the receptive fields ``rf``."""

    name: ClassVar[str]

    def __init__(self, rf: RFGeometry) -> None:
        self.rf = rf

    @abstractmethod
    def build_critic(self, dim: int, spec: CriticSpec) -> nn.Module:
        """The critic; its ``event_dims`` says how many trailing dims form one sample."""

    @abstractmethod
    def build_decoder(self, dim: int, spec: DecoderSpec) -> nn.Module:
        """The decoder, fed (B, M, C) compressed tokens."""

    @abstractmethod
    def real_samples(self, tokens: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Original tokens the critic compares the compressed ones with: (B, N, C) → (B, M, C)."""

    @abstractmethod
    def targets(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """What the decoder must rebuild from (B, N, C) tokens, and its slot mask (None: all valid)."""

    @abstractmethod
    def rf_layout(self, pred: Tensor) -> Tensor:
        """Decoder output in RF layout, (B, M, R, C), zero on invalid slots (for RF metrics)."""


DESIGNS: Registry[type[Design]] = Registry("design", attribute="name")


def register_design(name: str) -> Callable[[D], D]:
    """Class decorator: make a :class:`Design` available as ``model.design=name`` / ``Recipe.design``."""
    return DESIGNS.decorator(name)


def list_designs() -> list[str]:
    return DESIGNS.names()


def build_design(name: str, rf: RFGeometry) -> Design:
    return DESIGNS.get(name)(rf)
