"""The ``rf`` design: everything happens inside each receptive field."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from toconv.geometry import gather_rf_tokens, sample_rf_tokens
from toconv.objective.critics import RFCritic
from toconv.objective.decoders import RFAttentionDecoder, RFConvDecoder
from toconv.objective.designs.base import Design, register_design
from toconv.recipes import CriticSpec, DecoderSpec


@register_design("rf")
class RFDesign(Design):
    """The critic scores single tokens and compares each compressed token with one original token
    drawn from its own RF; the decoder rebuilds every original token of the RF, (B, M, R, C)."""

    def build_critic(self, dim: int, spec: CriticSpec) -> nn.Module:
        return RFCritic(dim, spec.width, spec.depth, spec.dropout)

    def build_decoder(self, dim: int, spec: DecoderSpec) -> nn.Module:
        if spec.kind == "conv":
            return RFConvDecoder(dim, self.rf.conv, spec.num_layers, spec.width)
        if spec.kind == "attention":
            return RFAttentionDecoder(dim, self.rf.conv, spec.num_layers, spec.num_heads)
        raise ValueError(f"RF decoder kind must be 'conv' or 'attention', got {spec.kind!r}")

    def real_samples(self, tokens: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return sample_rf_tokens(tokens, self.rf, generator)

    def targets(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        return gather_rf_tokens(tokens, self.rf), self.rf.mask

    def rf_layout(self, pred: Tensor) -> Tensor:
        mask = self.rf.mask.to(device=pred.device, dtype=pred.dtype)
        return pred * rearrange(mask, "m r -> 1 m r 1")
