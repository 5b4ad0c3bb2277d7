"""Adversarial objectives: WGAN (with gradient penalty) and hinge losses, and the R1 penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ADVERSARIAL_LOSSES = ("wgan-gp", "hinge")
"""Critic losses a recipe can name (``Recipe.adversarial_loss``)."""


def critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Critic minimises E[D(fake)] − E[D(real)] (the negative Wasserstein estimate)."""
    return fake_scores.mean() - real_scores.mean()


def hinge_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Hinge critic loss E[max(0, 1 − D(real))] + E[max(0, 1 + D(fake))]."""
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def generator_loss(fake_scores: Tensor) -> Tensor:
    """The compressor minimises −E[D(fake)] (for both critic losses)."""
    return -fake_scores.mean()


def _event_norms(grad: Tensor, event_dims: int) -> Tensor:
    return grad.flatten(start_dim=grad.ndim - event_dims).norm(dim=-1)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, lambda_gp: float = 10.0,
                     generator: torch.Generator | None = None) -> Tensor:
    """λ · E[(‖∇D(x̂)‖₂ − 1)²] on random interpolates x̂ = α·real + (1−α)·fake.

    One α is drawn per critic sample: per token for a token critic, per set for a set critic.
    The critic's ``event_dims`` attribute (default 1) says how many trailing dims form one sample.

    Args:
        real, fake: same shape (..., C) (or (B, T, C) for a set critic).
    Returns:
        scalar penalty, differentiable w.r.t. the critic's parameters.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    event_dims = getattr(critic, "event_dims", 1)
    batch_shape = real.shape[: real.ndim - event_dims]
    alpha = torch.rand(batch_shape + (1,) * event_dims, generator=generator, device=real.device,
                       dtype=real.dtype)
    interp = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(interp)
    (grad,) = torch.autograd.grad(scores.sum(), interp, create_graph=True)
    return lambda_gp * ((_event_norms(grad, event_dims) - 1) ** 2).mean()


def r1_penalty(critic: nn.Module, real: Tensor, weight: float) -> Tensor:
    """R1: weight / 2 · E[‖∇D(x)‖₂²] on real samples x (…, C) (per critic sample, as
    :func:`gradient_penalty`); differentiable w.r.t. the critic's parameters."""
    event_dims = getattr(critic, "event_dims", 1)
    points = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(points).sum(), points, create_graph=True)
    return weight / 2 * _event_norms(grad, event_dims).pow(2).mean()
