"""The compressor's training objective: an adversarial critic plus a reconstruction decoder.

Two designs share one interface:

* ``rf``: the critic scores single tokens and compares each compressed token with one original
  token drawn from its own receptive field; the decoder rebuilds the RF's tokens.
* ``global``: the critic scores token sets and compares the compressed set with a same-size random
  subset of original tokens; the decoder rebuilds the whole grid.
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from toconv.geometry import RFGeometry, gather_rf_tokens, sample_rf_tokens
from toconv.losses import critic_loss, generator_loss, gradient_penalty, reconstruction_loss
from toconv.models import GlobalCritic, GlobalDecoder, RFCritic, TokenCompressor

Design = Literal["rf", "global"]


class CompressorObjective(nn.Module):
    """Holds compressor, critic and decoder and computes both players' losses.

    Args:
        compressor: maps (B, N, C) patch tokens to (B, M, C).
        critic: :class:`RFCritic` (rf design) or :class:`GlobalCritic` (global design).
        decoder: RF decoder ((B, M, C) → (B, M, R, C)) or :class:`GlobalDecoder` (→ (B, N, C)).
        ae_weight: β, weight of the reconstruction loss.
        wgan_weight: α, weight of the adversarial loss (0 trains on reconstruction alone).
        lambda_gp: gradient-penalty weight of the critic.
    """

    def __init__(self, compressor: TokenCompressor, critic: nn.Module, decoder: nn.Module,
                 ae_weight: float = 1.0, wgan_weight: float = 0.1, lambda_gp: float = 10.0) -> None:
        super().__init__()
        if compressor.config.cls_token:
            raise ValueError("train the compressor on patch tokens: expected cls_token=False, got True")
        self.design = self._design(critic, decoder)
        self.compressor, self.critic, self.decoder = compressor, critic, decoder
        self.ae_weight, self.wgan_weight, self.lambda_gp = ae_weight, wgan_weight, lambda_gp

    @staticmethod
    def _design(critic: nn.Module, decoder: nn.Module) -> Design:
        critic_kind = "global" if isinstance(critic, GlobalCritic) else "rf"
        decoder_kind = "global" if isinstance(decoder, GlobalDecoder) else "rf"
        if critic_kind != decoder_kind:
            raise ValueError(f"critic and decoder must belong to one design, got a {critic_kind} "
                             f"critic ({type(critic).__name__}) and a {decoder_kind} decoder "
                             f"({type(decoder).__name__})")
        if critic_kind == "rf" and not isinstance(critic, RFCritic):
            raise ValueError(f"expected an RFCritic or a GlobalCritic, got {type(critic).__name__}")
        return critic_kind

    @property
    def rf(self) -> RFGeometry:
        return self.compressor.rf

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())

    def generator_parameters(self) -> list[nn.Parameter]:
        """Compressor and decoder parameters, trained together against the critic."""
        return list(self.compressor.parameters()) + list(self.decoder.parameters())

    def generator_param_groups(self, lr_compressor: float, lr_decoder: float) -> list[dict]:
        """Optimizer parameter groups of the generator step: compressor and decoder at their own rates."""
        return [{"params": list(self.compressor.parameters()), "lr": lr_compressor},
                {"params": list(self.decoder.parameters()), "lr": lr_decoder}]

    def hold_compressor(self) -> None:
        """Drop the compressor's gradients, so the next generator step moves only the decoder
        (warmup: the decoder learns to read the initial code before the compressor moves)."""
        for p in self.compressor.parameters():
            p.grad = None

    def real_samples(self, tokens: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Original tokens the critic compares compressed ones with: (B, N, C) → (B, M, C).

        rf: one random valid token of each RF; global: a random M-subset of the grid per image.
        """
        if self.design == "rf":
            return sample_rf_tokens(tokens, self.rf, generator)
        b, n, _ = tokens.shape
        keys = torch.rand(b, n, generator=generator, device=tokens.device)
        idx = keys.argsort(dim=1)[:, : self.rf.num_outputs]
        return tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))

    def critic_losses(self, tokens: Tensor, generator: torch.Generator | None = None,
                      fake: Tensor | None = None) -> dict[str, Tensor]:
        """Critic step on (B, N, C) tokens; the compressor output is detached.

        ``fake``: the compressor's (B, M, C) output for ``tokens`` when the caller already has it
        (several critic steps between two compressor steps share it).
        Returns ``loss`` (to minimise), ``wasserstein`` (detached estimate), ``gradient_penalty``.
        """
        if fake is None:
            with torch.no_grad():
                fake = self.compressor(tokens)
        fake = fake.detach()
        real = self.real_samples(tokens, generator)
        real_scores, fake_scores = self.critic(real), self.critic(fake)
        gp = gradient_penalty(self.critic, real, fake, self.lambda_gp, generator)
        loss = critic_loss(real_scores, fake_scores)
        return {"loss": loss + gp, "wasserstein": -loss.detach(), "gradient_penalty": gp.detach()}

    def generator_losses(self, tokens: Tensor) -> dict[str, Tensor]:
        """Compressor + decoder step on (B, N, C) tokens.

        Returns ``loss`` = wgan_weight·adversarial + ae_weight·reconstruction, and its parts
        ``adversarial``, ``reconstruction``, ``mse``, ``cosine`` (detached).
        """
        z = self.compressor(tokens)
        pred, target, mask = self._decode(z, tokens)
        rec = reconstruction_loss(pred, target, mask)
        adversarial = generator_loss(self.critic(z)) if self.wgan_weight else z.new_zeros(())
        loss = self.wgan_weight * adversarial + self.ae_weight * rec.total
        return {"loss": loss, "adversarial": adversarial.detach(), "reconstruction": rec.total.detach(),
                "mse": rec.mse.detach(), "cosine": rec.cosine.detach()}

    def _decode(self, z: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        if self.design == "rf":
            return self.decoder(z), gather_rf_tokens(tokens, self.rf), self.rf.mask
        return self.decoder(z), tokens, None

    @torch.no_grad()
    def reconstruct(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Rebuilt and original tokens in RF layout for both designs: two (B, M, R, C) tensors.

        Invalid slots (``~self.rf.mask``) are zero in both.
        """
        pred = self.decoder(self.compressor(tokens))
        if self.design == "rf":
            mask = self.rf.mask.to(device=pred.device, dtype=pred.dtype)
            pred = pred * rearrange(mask, "m r -> 1 m r 1")
        else:
            pred = gather_rf_tokens(pred, self.rf)
        return pred, gather_rf_tokens(tokens, self.rf)
