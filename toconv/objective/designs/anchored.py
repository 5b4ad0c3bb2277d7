"""The ``rf-anchored`` design: the ``rf`` design plus an anchor on what each RF means on average."""

from __future__ import annotations

import torch
from einops import reduce
from torch import Tensor, nn

from toconv.objective.designs.base import register_design
from toconv.objective.designs.rf import RFDesign
from toconv.recipes import DecoderSpec


class AnchoredDecoder(nn.Module):
    """An RF decoder whose output gets one more slot: the compressed token itself.

    Shapes: (B, M, C) → (B, M, R + 1, C).
    """

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, z: Tensor) -> Tensor:
        return torch.cat([self.decoder(z), z.unsqueeze(2)], dim=2)


@register_design("rf-anchored")
class AnchoredRFDesign(RFDesign):
    """As ``rf``, and the reconstruction also compares each compressed token with the mean of its
    RF's tokens (one extra slot of the same loss, so it weighs as one RF token): the code may
    carry more than the average, but stays readable as the average by a reader of real tokens."""

    def build_decoder(self, dim: int, spec: DecoderSpec) -> nn.Module:
        return AnchoredDecoder(super().build_decoder(dim, spec))

    def targets(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        windows, mask = super().targets(tokens)
        valid = mask.to(device=tokens.device, dtype=tokens.dtype)
        mean = reduce(windows, "b m r c -> b m c", "sum") / reduce(valid, "m r -> m 1", "sum")
        anchor_mask = torch.ones(mask.shape[0], 1, dtype=mask.dtype, device=mask.device)
        return torch.cat([windows, mean.unsqueeze(2)], dim=2), torch.cat([mask, anchor_mask], dim=1)

    def rf_layout(self, pred: Tensor) -> Tensor:
        return super().rf_layout(pred[:, :, :-1])
