"""Layers: the partial convolution and small shared blocks."""

from toconv.layers.mlp import mlp
from toconv.layers.partial_conv import PartialConv2d

__all__ = ["PartialConv2d", "mlp"]
