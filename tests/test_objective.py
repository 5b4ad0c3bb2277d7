"""CompressorObjective and its designs: gradient routing, real samples, reconstruction layout."""

from __future__ import annotations

import pytest
import torch

from toconv.geometry import gather_rf_tokens
from toconv.models import TokenCompressor, init_compressor
from toconv.objective import (
    CompressorObjective,
    Design,
    GlobalDecoder,
    RFCritic,
    build_design,
    list_designs,
    make_optimizers,
    register_design,
    train_on_tokens,
    train_step,
)
from toconv.objective.designs.base import DESIGNS
from toconv.recipes import CriticSpec, DecoderSpec, Recipe

DIM = 16
SMALL = Recipe(critic=CriticSpec(width=32), decoder=DecoderSpec(num_layers=2, num_heads=2))


def make_objective(design: str, output: int = 4, ae_weight: float = 1.0,
                   wgan_weight: float = 0.1) -> CompressorObjective:
    torch.manual_seed(0)
    recipe = SMALL.changed(design=design, ae_weight=ae_weight, wgan_weight=wgan_weight,
                           **({"decoder.num_layers": 1} if design == "global" else {}))
    return CompressorObjective.from_recipe(TokenCompressor(8, output, DIM), recipe)


def grads(params: list[torch.nn.Parameter]) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]


@pytest.mark.parametrize("design", ["rf", "global"])
def test_critic_step_trains_only_the_critic(design: str, device: torch.device) -> None:
    obj = make_objective(design).to(device)
    out = obj.critic_losses(torch.randn(3, 64, DIM, device=device))
    out["loss"].backward()
    assert obj.design.name == design
    assert sum(grads(obj.critic_parameters())) >= len(obj.critic_parameters()) - 1  # not the last bias
    assert not any(grads(obj.generator_parameters()))
    assert out["gradient_penalty"] >= 0 and not out["wasserstein"].requires_grad


@pytest.mark.parametrize("design", ["rf", "global", "rf-anchored"])
def test_generator_step_trains_compressor_and_decoder(design: str, device: torch.device) -> None:
    obj = make_objective(design, ae_weight=2.0, wgan_weight=0.5).to(device)
    out = obj.generator_losses(torch.randn(3, 64, DIM, device=device))
    out["loss"].backward()
    assert all(grads(list(obj.compressor.parameters())))
    assert any(grads(list(obj.decoder.parameters())))
    expected = 0.5 * out["adversarial"] + 2.0 * out["reconstruction"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    assert torch.isclose(out["reconstruction"], out["mse"] + 1 - out["cosine"])


def test_reconstruction_only_ignores_the_critic() -> None:
    obj = make_objective("rf", wgan_weight=0.0)
    out = obj.generator_losses(torch.randn(2, 64, DIM))
    out["loss"].backward()
    assert out["adversarial"] == 0 and not any(grads(obj.critic_parameters()))


def test_real_samples_come_from_the_right_places() -> None:
    tokens = torch.arange(64.0).repeat(2, 1).unsqueeze(-1).expand(2, 64, DIM).contiguous()
    rf_obj = make_objective("rf", output=3)  # 8→3 has overlapping, clipped RFs
    real = rf_obj.real_samples(tokens)[..., 0].long()  # (B, M) original indices
    allowed = rf_obj.rf.indices.masked_fill(~rf_obj.rf.mask, -1)
    assert (real.unsqueeze(-1) == allowed).any(-1).all()
    glob = make_objective("global").real_samples(tokens)[..., 0].long()
    assert glob.shape == (2, 16) and all(row.unique().numel() == 16 for row in glob)


@pytest.mark.parametrize("design", ["rf", "global", "rf-anchored"])
def test_reconstruct_is_in_rf_layout(design: str, device: torch.device) -> None:
    obj = make_objective(design, output=3).to(device)
    tokens = torch.randn(2, 64, DIM, device=device)
    pred, target = obj.reconstruct(tokens)
    rf = obj.rf
    assert pred.shape == target.shape == (2, rf.num_outputs, rf.max_size, DIM)
    torch.testing.assert_close(target, gather_rf_tokens(tokens, rf))
    assert (pred[:, ~rf.mask.to(device)] == 0).all()


def test_anchored_design_compares_each_token_with_its_rf_mean() -> None:
    obj = make_objective("rf-anchored", output=3)  # 8→3: clipped RFs average their valid slots
    tokens = torch.randn(2, 64, DIM)
    target, mask = obj.design.targets(tokens)
    rf = obj.rf
    r = rf.max_size
    assert target.shape == (2, rf.num_outputs, 2 * r, DIM) and torch.equal(mask[:, r:], rf.mask)
    windows = gather_rf_tokens(tokens, rf)
    mean = windows.sum(2) / rf.mask.sum(1, keepdim=True)
    torch.testing.assert_close(target[:, :, r:], mean.unsqueeze(2).expand(-1, -1, r, -1))
    torch.testing.assert_close(target[:, :, :r], windows)
    z = obj.compressor(tokens)
    torch.testing.assert_close(obj.decoder(z)[:, :, -1], z)


def test_designs_build_their_own_modules() -> None:
    assert {"rf", "global"} <= set(list_designs())
    rf, glob = make_objective("rf"), make_objective("global")
    assert isinstance(rf.critic, RFCritic) and isinstance(glob.decoder, GlobalDecoder)
    with pytest.raises(ValueError, match="unknown design 'tiles'; expected one of"):
        build_design("tiles", rf.rf)
    with pytest.raises(ValueError, match="cls_token=False"):
        CompressorObjective.from_recipe(TokenCompressor(8, 4, DIM, cls_token=True), SMALL)


class CentreDesign(Design):
    """A toy design: the critic compares each compressed token with its RF's centre token, the
    decoder (one linear map) rebuilds the RF's mean token."""

    def build_critic(self, dim: int, spec: CriticSpec) -> torch.nn.Module:
        return RFCritic(dim, spec.width, spec.depth)

    def build_decoder(self, dim: int, spec: DecoderSpec) -> torch.nn.Module:
        return torch.nn.Linear(dim, dim)

    def real_samples(self, tokens: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        k = self.rf.conv.kernel_size
        return tokens[:, self.rf.indices[:, (k // 2) * k + k // 2]]

    def targets(self, tokens: torch.Tensor) -> tuple[torch.Tensor, None]:
        rf_tokens = gather_rf_tokens(tokens, self.rf)
        return rf_tokens.sum(2) / self.rf.sizes[:, None], None

    def rf_layout(self, pred: torch.Tensor) -> torch.Tensor:
        return pred[:, :, None] * self.rf.mask[:, :, None]


def test_a_registered_toy_design_trains_for_a_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DESIGNS, "_entries", dict(DESIGNS._entries))  # unregistered afterwards
    register_design("centre-toy")(CentreDesign)
    assert "centre-toy" in list_designs()
    recipe = SMALL.changed(design="centre-toy", steps=1, batch_size=2, n_critic=1, warmup_steps=0,
                           lr_compressor=1e-2)
    tokens = torch.randn(4, 64, DIM)
    start = TokenCompressor(8, 4, DIM)
    trained, losses = train_on_tokens(tokens, start, recipe)
    assert set(losses) >= {"wasserstein", "reconstruction", "adversarial"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert not torch.equal(trained.conv.weight, start.conv.weight)
    obj = CompressorObjective.from_recipe(trained, recipe)
    pred, target = obj.reconstruct(tokens)
    assert pred.shape == target.shape == (4, 16, 4, DIM)


def test_train_step_reuses_the_compressed_tokens_and_skips_the_critic_at_weight_zero() -> None:
    obj = make_objective("rf")
    calls = []
    obj.compressor.register_forward_hook(lambda *_: calls.append(1))
    critic_opt, generator_opt = make_optimizers(obj, SMALL)
    tokens = torch.randn(2, 64, DIM)
    losses = train_step(obj, tokens, critic_opt, generator_opt, SMALL.changed(n_critic=3), step=0)
    assert len(calls) == 2 and "wasserstein" in losses  # once for 3 critic steps, once for the generator
    recon = make_objective("rf", wgan_weight=0.0)
    critic_before = [p.clone() for p in recon.critic_parameters()]
    critic_opt, generator_opt = make_optimizers(recon, SMALL)
    losses = train_step(recon, tokens, critic_opt, generator_opt, SMALL, step=0)
    assert "wasserstein" not in losses and not critic_opt.state
    assert all(torch.equal(a, b) for a, b in zip(critic_before, recon.critic_parameters(), strict=True))


def test_critic_losses_follow_the_recipe() -> None:
    tokens = torch.randn(3, 64, DIM)
    losses = {}
    for name, changes in {"wgan-gp": {}, "hinge": {"adversarial_loss": "hinge", "lambda_gp": 0.0},
                          "r1": {"adversarial_loss": "hinge", "lambda_gp": 0.0, "r1_weight": 1.0}}.items():
        torch.manual_seed(0)
        obj = CompressorObjective.from_recipe(TokenCompressor(8, 4, DIM), SMALL.changed(**changes))
        out = obj.critic_losses(tokens, torch.Generator().manual_seed(0))
        real = obj.critic(obj.real_samples(tokens, torch.Generator().manual_seed(0)))
        fake = obj.critic(obj.compressor(tokens))
        torch.testing.assert_close(out["wasserstein"], (real.mean() - fake.mean()).detach())
        losses[name] = out
    assert losses["wgan-gp"]["gradient_penalty"] > 0 and losses["hinge"]["gradient_penalty"] == 0
    assert losses["r1"]["gradient_penalty"] > 0
    torch.testing.assert_close(losses["r1"]["loss"] - losses["r1"]["gradient_penalty"], losses["hinge"]["loss"])
    with pytest.raises(ValueError, match="adversarial_loss: expected one of wgan-gp, hinge, got 'lsgan'"):
        CompressorObjective.from_recipe(TokenCompressor(8, 4, DIM), SMALL.changed(adversarial_loss="lsgan"))


@pytest.mark.parametrize("freeze", [True, False])
def test_training_a_pinned_start_moves_only_the_residual_code(freeze: bool) -> None:
    tokens = torch.randn(24, 64, DIM) + torch.linspace(-1, 1, DIM)
    start = init_compressor(tokens, 4, pin_pooling=5)
    basis = start.pinned_directions
    recipe = SMALL.changed(steps=6, warmup_steps=2, batch_size=4, n_critic=1, lr_compressor=1e-2,
                           freeze_pinned=freeze)
    trained, _ = train_on_tokens(tokens, start, recipe)
    weight, bias = trained.conv.weight, trained.conv.bias

    def pinned(w: torch.Tensor) -> torch.Tensor:
        return torch.einsum("cp,c...->p...", basis, w)

    assert not torch.allclose(weight, start.conv.weight, atol=1e-3)
    held = torch.allclose(pinned(weight), pinned(start.conv.weight), atol=1e-6, rtol=0)
    held = held and torch.allclose(pinned(bias), pinned(start.conv.bias), atol=1e-6, rtol=0)
    assert held == freeze
    with torch.no_grad():
        moved = (trained(tokens) - start(tokens)) @ basis
    assert (moved.abs().max() < 1e-4) == freeze


def test_the_critic_on_residual_sees_and_pushes_no_pinned_part() -> None:
    tokens = torch.randn(24, 64, DIM) + torch.linspace(-1, 1, DIM)
    start = init_compressor(tokens, 4, pin_pooling=5)
    basis = start.pinned_directions
    torch.manual_seed(0)
    obj = CompressorObjective.from_recipe(start, SMALL.changed(critic_on_residual=True))
    z = start(tokens).detach().requires_grad_(True)
    view = obj.critic_view(z)
    assert (view @ basis).abs().max() < 1e-5
    (grad,) = torch.autograd.grad(obj.critic(view).mean(), z)
    assert (grad @ basis).abs().max() < 1e-6 < grad.abs().max()
    plain = CompressorObjective.from_recipe(start, SMALL)
    assert plain.critic_view(z) is z
    unpinned = CompressorObjective.from_recipe(TokenCompressor(8, 4, DIM), SMALL.changed(critic_on_residual=True))
    assert unpinned.critic_view(z) is z
