"""The ``rf-anchored`` design: the ``rf`` design plus an anchor on what each RF means on average."""

from __future__ import annotations

import torch
from einops import reduce, repeat
from torch import Tensor, nn

from toconv.objective.designs.base import register_design
from toconv.objective.designs.rf import RFDesign
from toconv.recipes import DecoderSpec


class AnchoredDecoder(nn.Module):
    """An RF decoder whose output gets R more slots: the compressed token itself, repeated.

    Shapes: (B, M, C) → (B, M, 2R, C).
    """

    def __init__(self, decoder: nn.Module, slots: int) -> None:
        super().__init__()
        self.decoder, self.slots = decoder, slots

    def forward(self, z: Tensor) -> Tensor:
        return torch.cat([self.decoder(z), repeat(z, "b m c -> b m r c", r=self.slots)], dim=2)


@register_design("rf-anchored")
class AnchoredRFDesign(RFDesign):
    """As ``rf``, and the reconstruction also compares each compressed token with the mean of its
    RF's tokens, in as many slots of the same loss as the RF has (the anchor weighs as much as the
    RF's rebuild): the code may carry more than the average, but stays readable as the average by
    a reader of real tokens."""

    def build_decoder(self, dim: int, spec: DecoderSpec) -> nn.Module:
        return AnchoredDecoder(super().build_decoder(dim, spec), self.rf.max_size)

    def targets(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        windows, mask = super().targets(tokens)
        valid = mask.to(device=tokens.device, dtype=tokens.dtype)
        mean = reduce(windows, "b m r c -> b m c", "sum") / reduce(valid, "m r -> m 1", "sum")
        anchor = repeat(mean, "b m c -> b m r c", r=self.rf.max_size)
        return torch.cat([windows, anchor], dim=2), torch.cat([mask, mask], dim=1)

    def rf_layout(self, pred: Tensor) -> Tensor:
        return super().rf_layout(pred[:, :, : self.rf.max_size])
