"""Training: the compressor objective and the loop around it."""

from toconv.training.objective import CompressorObjective, Design

__all__ = ["CompressorObjective", "Design"]
