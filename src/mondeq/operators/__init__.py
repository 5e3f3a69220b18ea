"""Monotone linear operators: trainable modules and their frozen, factorised values."""

from .base import FrozenOperator, MonotoneOperator, Resolvent
from .conv import ConvFrozenOperator, ConvMonotone, FFTResolvent
from .dense import DenseFrozenOperator, DenseMonotone, DenseResolvent
from .multitier import MultiTierFrozenOperator, MultiTierMonotone, MultiTierResolvent

__all__ = [
    "ConvFrozenOperator",
    "ConvMonotone",
    "DenseFrozenOperator",
    "DenseMonotone",
    "DenseResolvent",
    "FFTResolvent",
    "FrozenOperator",
    "MonotoneOperator",
    "MultiTierFrozenOperator",
    "MultiTierMonotone",
    "MultiTierResolvent",
    "Resolvent",
]
