"""Classifiers built by name (SPEC 4)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from ..errors import InputError
from .conv import ConvMonDEQ
from .fc import FCMonDEQ

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fc": FCMonDEQ,
    "conv": ConvMonDEQ,
    "conv-large": partial(ConvMonDEQ, channels=200),
}
DESCRIPTIONS = {
    "fc": "fully connected monDEQ (MNIST: 784 → 87 → 10, 84,313 parameters)",
    "conv": "single-convolution monDEQ (MNIST 56 channels, 84,460; CIFAR-10 81 channels, 172,218)",
    "conv-large": "single-convolution monDEQ, 200 channels (CIFAR-10: 853,612 parameters)",
}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    """The model registered as ``name`` for inputs of ``input_shape``; unknown names or options raise."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    params = inspect.signature(cls).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise InputError(f"model {name!r} has no option(s) {unknown}")
    return cls(input_shape, num_classes, **options)


__all__ = ["DESCRIPTIONS", "MODELS", "ConvMonDEQ", "FCMonDEQ", "build_model"]
