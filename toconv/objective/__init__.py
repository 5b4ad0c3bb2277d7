"""What trains a compressor: critics, decoders, losses, designs, the objective and the step.

Only training imports this package; a compressor in use (:mod:`toconv.models`) never does.
"""

from toconv.objective.critics import GlobalCritic, RFCritic
from toconv.objective.decoders import GlobalDecoder, RFAttentionDecoder, RFConvDecoder
from toconv.objective.designs import Design, build_design, list_designs, register_design
from toconv.objective.objective import CompressorObjective
from toconv.objective.reconstruction import ReconstructionLoss, reconstruction_loss
from toconv.objective.slots import train_slots
from toconv.objective.step import make_optimizers, train_on_tokens, train_step
from toconv.objective.wgan import (
    ADVERSARIAL_LOSSES,
    critic_loss,
    generator_loss,
    gradient_penalty,
    hinge_critic_loss,
    r1_penalty,
)

__all__ = [
    "ADVERSARIAL_LOSSES",
    "CompressorObjective",
    "Design",
    "GlobalCritic",
    "GlobalDecoder",
    "RFAttentionDecoder",
    "RFConvDecoder",
    "RFCritic",
    "ReconstructionLoss",
    "build_design",
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
    "hinge_critic_loss",
    "list_designs",
    "make_optimizers",
    "r1_penalty",
    "reconstruction_loss",
    "register_design",
    "train_on_tokens",
    "train_slots",
    "train_step",
]
