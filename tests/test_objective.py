"""CompressorObjective: both designs, gradient routing, reconstruction layout."""

from __future__ import annotations

import pytest
import torch

from toconv.models import (
    GlobalCritic,
    GlobalDecoder,
    RFConvDecoder,
    RFCritic,
    TokenCompressor,
    gather_rf_tokens,
)
from toconv.training import CompressorObjective

DIM = 16


def make_objective(design: str, output: int = 4, **weights: float) -> CompressorObjective:
    torch.manual_seed(0)
    compressor = TokenCompressor(8, output, DIM)
    if design == "rf":
        critic, decoder = RFCritic(DIM, 32), RFConvDecoder(DIM, compressor.geometry, 2)
    else:
        critic, decoder = GlobalCritic(DIM, 32), GlobalDecoder(DIM, compressor.geometry, 1, 2)
    return CompressorObjective(compressor, critic, decoder, **weights)


def grads(params: list[torch.nn.Parameter]) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]


@pytest.mark.parametrize("design", ["rf", "global"])
def test_critic_step_trains_only_the_critic(design: str, device: torch.device) -> None:
    obj = make_objective(design).to(device)
    out = obj.critic_losses(torch.randn(3, 64, DIM, device=device))
    out["loss"].backward()
    assert obj.design == design
    assert sum(grads(obj.critic_parameters())) >= len(obj.critic_parameters()) - 1  # not the last bias
    assert not any(grads(obj.generator_parameters()))
    assert out["gradient_penalty"] >= 0 and not out["wasserstein"].requires_grad


@pytest.mark.parametrize("design", ["rf", "global"])
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


@pytest.mark.parametrize("design", ["rf", "global"])
def test_reconstruct_is_in_rf_layout(design: str, device: torch.device) -> None:
    obj = make_objective(design, output=3).to(device)
    tokens = torch.randn(2, 64, DIM, device=device)
    pred, target = obj.reconstruct(tokens)
    rf = obj.rf
    assert pred.shape == target.shape == (2, rf.num_outputs, rf.max_size, DIM)
    torch.testing.assert_close(target, gather_rf_tokens(tokens, rf))
    assert (pred[:, ~rf.mask.to(device)] == 0).all()


def test_mixed_designs_are_refused() -> None:
    compressor = TokenCompressor(8, 4, DIM)
    with pytest.raises(ValueError, match="one design"):
        CompressorObjective(compressor, RFCritic(DIM), GlobalDecoder(DIM, compressor.geometry))
    with pytest.raises(ValueError, match="cls_token=False"):
        CompressorObjective(TokenCompressor(8, 4, DIM, cls_token=True), RFCritic(DIM),
                            RFConvDecoder(DIM, compressor.geometry))
