import pytest
import torch
from torch import nn

from toconv.objective import (
    GlobalCritic,
    RFCritic,
    critic_loss,
    generator_loss,
    gradient_penalty,
    hinge_critic_loss,
    r1_penalty,
    reconstruction_loss,
)


class LinearCritic(nn.Module):
    event_dims = 1

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x @ self.w


class QuadraticCritic(nn.Module):
    """D(x) = tanh(x·A)·b, a hand-built non-linear critic."""

    event_dims = 1

    def __init__(self, dim):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.a = nn.Parameter(torch.randn(dim, 6, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(6, generator=g, dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(x @ self.a) @ self.b


def test_gradient_penalty_of_linear_critic_is_analytic():
    w = torch.tensor([3.0, 4.0])  # ‖∇D‖ = 5 everywhere
    gp = gradient_penalty(LinearCritic(w), torch.randn(5, 7, 2), torch.randn(5, 7, 2), lambda_gp=10.0)
    torch.testing.assert_close(gp, torch.tensor(160.0))


def test_gradient_penalty_matches_per_sample_autograd_reference():
    dim = 4
    critic = QuadraticCritic(dim)
    real = torch.randn(3, 5, dim, dtype=torch.float64)
    fake = torch.randn(3, 5, dim, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake, lambda_gp=7.0, generator=torch.Generator().manual_seed(0))
    alpha = torch.rand(3, 5, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    terms = []
    for b in range(3):
        for t in range(5):
            point = (alpha[b, t] * real[b, t] + (1 - alpha[b, t]) * fake[b, t]).requires_grad_(True)
            (g,) = torch.autograd.grad(critic(point), point)
            terms.append((g.norm() - 1) ** 2)
    torch.testing.assert_close(gp, 7.0 * torch.stack(terms).mean())
    # differentiable w.r.t. the critic
    gp.backward()
    assert critic.a.grad is not None and critic.a.grad.abs().sum() > 0


def test_gradient_penalty_for_set_critic_uses_one_alpha_per_set():
    critic = GlobalCritic(6, width=8, depth=2)
    real, fake = torch.randn(4, 9, 6), torch.randn(4, 9, 6)
    gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(0))
    alpha = torch.rand(4, 1, 1, generator=torch.Generator().manual_seed(0))
    interp = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(interp).sum(), interp)
    torch.testing.assert_close(gp, 10.0 * ((g.flatten(1).norm(dim=1) - 1) ** 2).mean())


def test_gradient_penalty_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(RFCritic(4), torch.randn(2, 4), torch.randn(3, 4))


def test_wasserstein_losses():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.5])
    torch.testing.assert_close(critic_loss(real, fake), torch.tensor(-1.5))
    torch.testing.assert_close(generator_loss(fake), torch.tensor(-0.5))


def test_hinge_critic_loss_by_hand():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 0.5])
    # real: max(0, 1 − D) = 0, 0.5, 2 → 2.5/3; fake: max(0, 1 + D) = 0, 1, 1.5 → 2.5/3
    torch.testing.assert_close(hinge_critic_loss(real, fake), torch.tensor(5.0 / 3))


def test_r1_penalty_of_linear_critic_is_analytic():
    w = torch.tensor([3.0, 4.0])  # ‖∇D‖² = 25 everywhere
    torch.testing.assert_close(r1_penalty(LinearCritic(w), torch.randn(5, 7, 2), weight=2.0),
                               torch.tensor(25.0))


def test_r1_penalty_matches_per_sample_autograd_reference():
    critic = QuadraticCritic(4)
    real = torch.randn(3, 5, 4, dtype=torch.float64)
    penalty = r1_penalty(critic, real, weight=0.4)
    terms = []
    for point in real.reshape(-1, 4):
        point = point.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(critic(point), point)
        terms.append(g.pow(2).sum())
    torch.testing.assert_close(penalty, 0.2 * torch.stack(terms).mean())
    penalty.backward()
    assert critic.a.grad is not None and critic.a.grad.abs().sum() > 0


def test_reconstruction_loss_ignores_invalid_slots():
    target = torch.randn(2, 3, 4, 5)
    mask = torch.tensor([[True, True, False, False], [True] * 4, [True, False, True, False]])
    pred = target.clone()
    pred[:, ~mask] = 100.0  # garbage in invalid slots only
    loss = reconstruction_loss(pred, target, mask)
    torch.testing.assert_close(loss.mse, torch.tensor(0.0))
    torch.testing.assert_close(loss.cosine, torch.tensor(1.0))
    torch.testing.assert_close(loss.total, torch.tensor(0.0), atol=1e-6, rtol=0)


def test_reconstruction_loss_values():
    target = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    pred = torch.tensor([[[0.0, 1.0], [0.0, 2.0]]])  # cos 0 and 1; squared errors 1 and 0 per elem
    loss = reconstruction_loss(pred, target)
    torch.testing.assert_close(loss.cosine, torch.tensor(0.5))
    torch.testing.assert_close(loss.mse, torch.tensor(0.5))
    torch.testing.assert_close(loss.total, torch.tensor(1.0))
