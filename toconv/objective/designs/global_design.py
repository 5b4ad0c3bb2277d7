"""The ``global`` design: the critic and the decoder see whole token sets."""

from __future__ import annotations

import torch
from einops import repeat
from torch import Tensor, nn

from toconv.geometry import gather_rf_tokens
from toconv.objective.critics import GlobalCritic
from toconv.objective.decoders import GlobalDecoder
from toconv.objective.designs.base import Design, register_design
from toconv.recipes import CriticSpec, DecoderSpec


@register_design("global")
class GlobalDesign(Design):
    """The critic scores token sets and compares the compressed set with a same-size random subset
    of original tokens; the decoder rebuilds the whole grid, (B, N, C)."""

    def build_critic(self, dim: int, spec: CriticSpec) -> nn.Module:
        return GlobalCritic(dim, spec.width, spec.depth, spec.dropout)

    def build_decoder(self, dim: int, spec: DecoderSpec) -> nn.Module:
        return GlobalDecoder(dim, self.rf.conv, spec.num_layers, spec.num_heads)

    def real_samples(self, tokens: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, n, c = tokens.shape
        keys = torch.rand(b, n, generator=generator, device=tokens.device)
        idx = keys.argsort(dim=1)[:, : self.rf.num_outputs]
        return tokens.gather(1, repeat(idx, "b m -> b m c", c=c))

    def targets(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        return tokens, None

    def rf_layout(self, pred: Tensor) -> Tensor:
        return gather_rf_tokens(pred, self.rf)
