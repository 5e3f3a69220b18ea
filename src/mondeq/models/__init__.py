"""Classifiers built by name (SPEC 4)."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..errors import InputError
from .fc import FCMonDEQ

MODELS: dict[str, type[nn.Module]] = {"fc": FCMonDEQ}


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


__all__ = ["MODELS", "FCMonDEQ", "build_model"]
