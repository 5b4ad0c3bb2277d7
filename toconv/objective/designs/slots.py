"""The ``slots`` design: a slots compressor rebuilds every original token, and the critic compares
each slot with real tokens drawn by that slot's own attention mask."""

from __future__ import annotations

import torch
from einops import einsum, rearrange, repeat
from torch import Tensor, nn

from toconv.geometry import RFGeometry, gather_rf_tokens
from toconv.models.slots import SlotFields
from toconv.objective.critics import RFCritic
from toconv.objective.designs.base import Design, register_design
from toconv.recipes import CriticSpec, DecoderSpec


class SlotBroadcastDecoder(nn.Module):
    """Spatial-broadcast decoder: every slot is broadcast to all N positions (plus a learned
    position embedding) and an MLP of width W gives, per slot and position, a feature and a mask
    logit; the masks (softmax over the slots) mix the per-slot reconstructions.

    The per-slot reconstruction is an affine map of the MLP's last feature, so the mixture is
    computed by mixing the features first (equal, and K times cheaper); a skip adds the
    mask-mixed slots themselves, so an untrained decoder starts from "each token is its slots'
    mixture". Shapes: (B, K, C) → (B, N, C).
    """

    def __init__(self, dim: int, num_positions: int, width: int = 64, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.slot_in = nn.Linear(dim, width)
        self.positions = nn.Parameter(torch.randn(num_positions, width) * 0.02)
        hidden: list[nn.Module] = []
        for _ in range(num_layers - 1):
            hidden += [nn.GELU(), nn.Linear(width, width)]
        self.hidden = nn.Sequential(*hidden, nn.GELU())
        self.mask_logit = nn.Linear(width, 1)
        self.out = nn.Linear(width, dim)

    def features(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Per-slot features (B, K, N, W) and decoder masks (B, K, N)."""
        h = self.hidden(rearrange(self.slot_in(z), "b k w -> b k 1 w") + self.positions)
        return h, self.mask_logit(h).squeeze(-1).softmax(dim=1)

    def per_slot(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Every slot's own reconstruction (B, K, N, C) and the masks (B, K, N) that mix them."""
        h, masks = self.features(z)
        return self.out(h) + rearrange(z, "b k c -> b k 1 c"), masks

    def forward(self, z: Tensor) -> Tensor:
        h, masks = self.features(z)
        return (self.out(einsum(masks, h, "b k n, b k n w -> b n w"))
                + einsum(masks, z, "b k n, b k c -> b n c"))


@register_design("slots")
class SlotDesign(Design):
    """For the ``slots`` family. The critic scores single tokens and compares each slot token
    with one original token drawn from that slot's attention mask (its receptive field, per
    image); the decoder (:class:`SlotBroadcastDecoder`, width ``DecoderSpec.width`` or 64)
    rebuilds the whole grid, (B, N, C). The RF layout for metrics is the grid RFs of the same
    token counts."""

    rf: SlotFields

    def __init__(self, rf: RFGeometry) -> None:
        if not isinstance(rf, SlotFields):
            raise ValueError(f"the slots design trains a slots compressor (its rf is SlotFields), "
                             f"got the receptive fields of a grid ({type(rf).__name__}, "
                             f"{rf.conv.describe()}); use model.compressor.family=slots")
        super().__init__(rf)

    def build_critic(self, dim: int, spec: CriticSpec) -> nn.Module:
        return RFCritic(dim, spec.width, spec.depth, spec.dropout)

    def build_decoder(self, dim: int, spec: DecoderSpec) -> nn.Module:
        return SlotBroadcastDecoder(dim, self.rf.conv.num_inputs, spec.width or 64, spec.num_layers)

    def real_samples(self, tokens: Tensor, generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            masks = self.rf.masks(tokens).float()
        idx = torch.multinomial(rearrange(masks, "b k n -> (b k) n") + 1e-12, 1, generator=generator)
        idx = rearrange(idx, "(b k) 1 -> b k", b=masks.shape[0])
        return tokens.gather(1, repeat(idx, "b k -> b k c", c=tokens.shape[-1]))

    def targets(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        return tokens, None

    def rf_layout(self, pred: Tensor) -> Tensor:
        return gather_rf_tokens(pred, self.rf)
