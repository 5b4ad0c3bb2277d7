"""Losses: WGAN-GP for distribution match and reconstruction for information kept."""

from toconv.losses.reconstruction import ReconstructionLoss, reconstruction_loss
from toconv.losses.wgan import critic_loss, generator_loss, gradient_penalty

__all__ = [
    "ReconstructionLoss",
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
    "reconstruction_loss",
]
