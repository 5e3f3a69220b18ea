"""Monotone linear operators: trainable modules and their frozen, factorised values."""

from .base import FrozenOperator, MonotoneOperator, Resolvent
from .conv import ConvFrozenOperator, ConvMonotone, FFTResolvent
from .dense import DenseFrozenOperator, DenseMonotone, DenseResolvent

__all__ = [
    "ConvFrozenOperator",
    "ConvMonotone",
    "DenseFrozenOperator",
    "DenseMonotone",
    "DenseResolvent",
    "FFTResolvent",
    "FrozenOperator",
    "MonotoneOperator",
    "Resolvent",
]
