"""Monotone linear operators: trainable modules and their frozen, factorised values."""

from .base import FrozenOperator, MonotoneOperator, Resolvent
from .dense import DenseFrozenOperator, DenseMonotone, DenseResolvent

__all__ = [
    "DenseFrozenOperator",
    "DenseMonotone",
    "DenseResolvent",
    "FrozenOperator",
    "MonotoneOperator",
    "Resolvent",
]
