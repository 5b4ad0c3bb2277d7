"""The compressor's training objective: an adversarial critic plus a reconstruction decoder."""

from __future__ import annotations

import torch
from einops import einsum
from torch import Tensor, nn

from toconv.geometry import RFGeometry, gather_rf_tokens
from toconv.models import TokenCompressor
from toconv.objective.designs import Design, build_design
from toconv.objective.reconstruction import reconstruction_loss
from toconv.objective.wgan import (
    ADVERSARIAL_LOSSES,
    critic_loss,
    generator_loss,
    gradient_penalty,
    hinge_critic_loss,
    r1_penalty,
)
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
        lambda_gp: gradient-penalty weight of the critic (0: none).
        adversarial_loss: the critic's loss, ``wgan-gp`` (Wasserstein) or ``hinge``.
        r1_weight: γ of the R1 penalty γ/2·E‖∇D(real)‖² on the critic (0: none).
        freeze_pinned: hold the output of a pooling-pinned start (:func:`toconv.models.pca_init_`)
            fixed in its pinned directions U: gradients are projected off U before clipping and
            the pinned part of the weights is restored after every optimizer step
            (:meth:`project_pinned_gradients`, :meth:`restore_pinned`), so only the residual code
            trains. Without pinned directions on the compressor it does nothing.
        critic_on_residual: with a frozen pinned start, the critic sees real and compressed tokens
            with their pinned part removed (x − UUᵀx), so it judges only what the compressor can
            still change.
    """

    def __init__(self, compressor: TokenCompressor, design: Design, critic: nn.Module,
                 decoder: nn.Module, ae_weight: float = 1.0, wgan_weight: float = 0.1,
                 lambda_gp: float = 10.0, adversarial_loss: str = "wgan-gp", r1_weight: float = 0.0,
                 freeze_pinned: bool = False, critic_on_residual: bool = False) -> None:
        super().__init__()
        if compressor.config.cls_token:
            raise ValueError("train the compressor on patch tokens: expected cls_token=False, got True")
        if adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"adversarial_loss: expected one of {', '.join(ADVERSARIAL_LOSSES)}, "
                             f"got {adversarial_loss!r}")
        if lambda_gp < 0 or r1_weight < 0:
            raise ValueError(f"penalty weights must be >= 0, got lambda_gp={lambda_gp}, r1_weight={r1_weight}")
        self.design = design
        self.compressor, self.critic, self.decoder = compressor, critic, decoder
        self.ae_weight, self.wgan_weight, self.lambda_gp = ae_weight, wgan_weight, lambda_gp
        self.adversarial_loss, self.r1_weight = adversarial_loss, r1_weight
        self.critic_on_residual = critic_on_residual
        basis = getattr(compressor, "pinned_directions", None) if freeze_pinned else None  # slots: none
        # (C, p) pinned directions and the pinned part of the start, Uᵀ·weight and Uᵀ·bias; not
        # saved with the objective (the basis travels with the compressor)
        self.register_buffer("pinned_basis", basis, persistent=False)
        conv = None if basis is None else compressor.conv
        self.register_buffer("pinned_weight", None if conv is None else _pinned_part(basis, conv.weight),
                             persistent=False)
        self.register_buffer("pinned_bias", None if conv is None or conv.bias is None
                             else _pinned_part(basis, conv.bias), persistent=False)

    @classmethod
    def from_recipe(cls, compressor: TokenCompressor, recipe: Recipe) -> CompressorObjective:
        """The recipe's design, critic and decoder around ``compressor`` (critic built first)."""
        design = build_design(recipe.design, compressor.rf)
        dim = compressor.config.hidden_dim
        critic = design.build_critic(dim, recipe.critic)
        decoder = design.build_decoder(dim, recipe.decoder)
        return cls(compressor, design, critic, decoder, recipe.ae_weight, recipe.wgan_weight,
                   recipe.lambda_gp, recipe.adversarial_loss, recipe.r1_weight, recipe.freeze_pinned,
                   recipe.critic_on_residual)

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

    @torch.no_grad()
    def project_pinned_gradients(self) -> None:
        """Remove the pinned directions' part from the compressor's gradients (so clipping and the
        optimizer see only the residual code's); nothing without a frozen pinned start."""
        if self.pinned_basis is None:
            return
        for param in (self.compressor.conv.weight, self.compressor.conv.bias):
            if param is not None and param.grad is not None:
                param.grad -= _lift(self.pinned_basis, _pinned_part(self.pinned_basis, param.grad))

    @torch.no_grad()
    def restore_pinned(self) -> None:
        """Put the pinned part of the compressor's weights back to the start's (Adam's elementwise
        update leaks into the pinned directions even from projected gradients); nothing without a
        frozen pinned start."""
        if self.pinned_basis is None:
            return
        conv, basis = self.compressor.conv, self.pinned_basis
        conv.weight += _lift(basis, self.pinned_weight - _pinned_part(basis, conv.weight))
        if conv.bias is not None:
            conv.bias += _lift(basis, self.pinned_bias - _pinned_part(basis, conv.bias))

    def critic_view(self, tokens: Tensor) -> Tensor:
        """(…, C) tokens as the critic sees them: without their pinned part with
        ``critic_on_residual`` and a frozen pinned start, else unchanged."""
        if not self.critic_on_residual or self.pinned_basis is None:
            return tokens
        basis = self.pinned_basis.to(tokens.dtype)
        return tokens - (tokens @ basis) @ basis.T

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
        Returns ``loss`` (to minimise), ``wasserstein`` (detached E[D(real)] − E[D(fake)], the
        Wasserstein estimate for ``wgan-gp``, the score gap for ``hinge``), ``gradient_penalty``
        (detached, the gradient penalty plus R1).
        """
        if fake is None:
            with torch.no_grad():
                fake = self.compressor(tokens)
        fake = self.critic_view(fake.detach())
        real = self.critic_view(self.real_samples(tokens, generator))
        real_scores, fake_scores = self.critic(real), self.critic(fake)
        penalty = real_scores.new_zeros(())
        if self.lambda_gp:
            penalty = penalty + gradient_penalty(self.critic, real, fake, self.lambda_gp, generator)
        if self.r1_weight:
            penalty = penalty + r1_penalty(self.critic, real, self.r1_weight)
        gap = critic_loss(real_scores, fake_scores)
        loss = hinge_critic_loss(real_scores, fake_scores) if self.adversarial_loss == "hinge" else gap
        return {"loss": loss + penalty, "wasserstein": -gap.detach(), "gradient_penalty": penalty.detach()}

    def generator_losses(self, tokens: Tensor) -> dict[str, Tensor]:
        """Compressor + decoder step on (B, N, C) tokens.

        Returns ``loss`` = wgan_weight·adversarial + ae_weight·reconstruction, and its parts
        ``adversarial``, ``reconstruction``, ``mse``, ``cosine`` (detached).
        """
        z = self.compressor(tokens)
        target, mask = self.design.targets(tokens)
        rec = reconstruction_loss(self.decoder(z), target, mask)
        adversarial = generator_loss(self.critic(self.critic_view(z))) if self.adversarial else z.new_zeros(())
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


def _pinned_part(basis: Tensor, param: Tensor) -> Tensor:
    """Uᵀ along the output axis: (C, p) basis, (C, …) weight or bias → (p, …)."""
    return einsum(basis, param, "c p, c ... -> p ...")


def _lift(basis: Tensor, part: Tensor) -> Tensor:
    """U along the output axis: (C, p) basis, (p, …) → (C, …)."""
    return einsum(basis, part, "c p, p ... -> c ...")
