"""The compressor's training objective: an adversarial critic plus a reconstruction decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from toconv.geometry import RFGeometry, gather_rf_tokens
from toconv.models import TokenCompressor
from toconv.objective.designs import Design, build_design
from toconv.objective.reconstruction import reconstruction_loss
from toconv.objective.wgan import critic_loss, generator_loss, gradient_penalty
from toconv.recipes import Recipe


class CompressorObjective(nn.Module):
    """Holds compressor, critic and decoder and computes both players' losses.

    What the critic compares and what the decoder rebuilds comes from ``design``; nothing here
    depends on which design it is.

    Args:
        compressor: maps (B, N, C) patch tokens to (B, M, C).
        design: a :class:`~toconv.objective.designs.Design` for the compressor's RFs.
        critic, decoder: the design's modules (``design.build_critic`` / ``build_decoder``).
        ae_weight: β, weight of the reconstruction loss.
        wgan_weight: α, weight of the adversarial loss (0 trains on reconstruction alone).
        lambda_gp: gradient-penalty weight of the critic.
    """

    def __init__(self, compressor: TokenCompressor, design: Design, critic: nn.Module,
                 decoder: nn.Module, ae_weight: float = 1.0, wgan_weight: float = 0.1,
                 lambda_gp: float = 10.0) -> None:
        super().__init__()
        if compressor.config.cls_token:
            raise ValueError("train the compressor on patch tokens: expected cls_token=False, got True")
        self.design = design
        self.compressor, self.critic, self.decoder = compressor, critic, decoder
        self.ae_weight, self.wgan_weight, self.lambda_gp = ae_weight, wgan_weight, lambda_gp

    @classmethod
    def from_recipe(cls, compressor: TokenCompressor, recipe: Recipe) -> CompressorObjective:
        """The recipe's design, critic and decoder around ``compressor`` (critic built first)."""
        design = build_design(recipe.design, compressor.rf)
        dim = compressor.config.hidden_dim
        critic = design.build_critic(dim, recipe.critic)
        decoder = design.build_decoder(dim, recipe.decoder)
        return cls(compressor, design, critic, decoder, recipe.ae_weight, recipe.wgan_weight,
                   recipe.lambda_gp)

    @property
    def rf(self) -> RFGeometry:
        return self.compressor.rf

    @property
    def adversarial(self) -> bool:
        """Whether the critic plays at all (``wgan_weight`` > 0)."""
        return self.wgan_weight > 0

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
        """Original tokens the critic compares compressed ones with: (B, N, C) → (B, M, C)."""
        return self.design.real_samples(tokens, generator)

    def forward(self, tokens: Tensor, player: str, generator: torch.Generator | None = None,
                fake: Tensor | None = None) -> dict[str, Tensor]:
        """Either player's losses (``critic`` or ``generator``), so that a wrapper (DDP, mixed
        precision) around this module sees both."""
        if player == "critic":
            return self.critic_losses(tokens, generator, fake)
        if player == "generator":
            return self.generator_losses(tokens)
        raise ValueError(f"player must be 'critic' or 'generator', got {player!r}")

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
        target, mask = self.design.targets(tokens)
        rec = reconstruction_loss(self.decoder(z), target, mask)
        adversarial = generator_loss(self.critic(z)) if self.adversarial else z.new_zeros(())
        loss = self.wgan_weight * adversarial + self.ae_weight * rec.total
        return {"loss": loss, "adversarial": adversarial.detach(), "reconstruction": rec.total.detach(),
                "mse": rec.mse.detach(), "cosine": rec.cosine.detach()}

    @torch.no_grad()
    def reconstruct(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Rebuilt and original tokens in RF layout for every design: two (B, M, R, C) tensors.

        Invalid slots (``~self.rf.mask``) are zero in both.
        """
        pred = self.design.rf_layout(self.decoder(self.compressor(tokens)))
        return pred, gather_rf_tokens(tokens, self.rf)
