"""Linear operators ``W`` with their guarantees: trainable modules and their frozen, factorised values."""

from .base import FrozenOperator, MonotoneOperator, Resolvent, TrainableOperator
from .conv import ConvFrozenOperator, ConvMonotone, FFTResolvent
from .dense import DenseFrozenOperator, DenseMonotone, DenseResolvent
from .multitier import MultiTierFrozenOperator, MultiTierMonotone, MultiTierResolvent
from .nemon import ConvNemon, ConvNemonFrozenOperator, DenseNemon

__all__ = [
    "ConvFrozenOperator",
    "ConvMonotone",
    "ConvNemon",
    "ConvNemonFrozenOperator",
    "DenseFrozenOperator",
    "DenseMonotone",
    "DenseNemon",
    "DenseResolvent",
    "FFTResolvent",
    "FrozenOperator",
    "MonotoneOperator",
    "MultiTierFrozenOperator",
    "MultiTierMonotone",
    "MultiTierResolvent",
    "Resolvent",
    "TrainableOperator",
]
