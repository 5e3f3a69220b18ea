"""Classifiers built by name (SPEC 4)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from torch import nn

from ..errors import InputError
from .composed import ComposedL2, ComposedNemon, compose
from .conv import ConvMonDEQ
from .fc import FCMonDEQ
from .multitier import MultiTierMonDEQ
from .nemon import NemonConv, NemonFC
from .opteq import OptEqConv, OptEqFC

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fc": FCMonDEQ,
    "conv": ConvMonDEQ,
    "conv-large": partial(ConvMonDEQ, channels=200),
    "multitier": MultiTierMonDEQ,
    "multitier-large": partial(MultiTierMonDEQ, channels=(64, 128, 128)),
    "nemon-fc": NemonFC,
    "nemon-conv": NemonConv,
    "opteq-fc": OptEqFC,
    "opteq-conv": OptEqConv,
    "opteq-deep-fc": partial(OptEqFC, hidden=(72, 72, 72)),
    "opteq-deep-conv": partial(OptEqConv, channels=(38, 38, 38)),
}
DESCRIPTIONS = {
    "fc": "fully connected monDEQ (MNIST: 784 → 87 → 10, 84,313 parameters)",
    "conv": "single-convolution monDEQ (MNIST 56 channels, 84,460; CIFAR-10 81 channels, 172,218)",
    "conv-large": "single-convolution monDEQ, 200 channels (CIFAR-10: 853,612 parameters)",
    "multitier": "multi-tier monDEQ (MNIST (16, 32, 32), 81,394; CIFAR-10 (16, 32, 60), 170,194)",
    "multitier-large": "multi-tier monDEQ, (64, 128, 128) (CIFAR-10: 1,014,546 parameters)",
    "nemon-fc": "fully connected NEMON, ℓ∞-contractive (MNIST: 784 → 100 → 10, 89,610 parameters)",
    "nemon-conv": "single-convolution NEMON, ℓ∞-contractive (MNIST 64 channels; CIFAR-10 81 channels)",
    "opteq-fc": "fully connected OptEq, W = VᵀV (MNIST: 784 → 95 → 10, 84,560 parameters)",
    "opteq-conv": "single-convolution OptEq, W = VᵀV (MNIST 73 channels, 84,471; CIFAR-10 106 channels, 171,942)",
    "opteq-deep-fc": "deep fully connected OptEq, blocks (72, 72, 72) (MNIST: 83,170 parameters)",
    "opteq-deep-conv": "deep convolutional OptEq, blocks (38, 38, 38) at one resolution (MNIST: 83,990 parameters)",
}


class ModelInfo(NamedTuple):
    """What the registry says of a model: :data:`DESCRIPTIONS`' line, its options with their defaults (keyword
    arguments of :func:`build_model`), the solvers with a proof for its operator (short names of
    :data:`~mondeq.solvers.SOLVERS`) and the family's default among them."""

    description: str
    options: dict[str, Any]
    solvers: list[str]
    default_solver: str


_NOT_OPTIONS = ("input_shape", "num_classes", "solver", "backward", "eval_solver")


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of the registered ``name`` (its solvers read from the guarantee of a small instance)."""
    from ..layers import EquilibriumLayer
    from ..solvers import SOLVERS, default_solver

    model = build_model(name, (1, 8, 8), 2)  # small; refuses an unknown name in one line
    options = {k: p.default for k, p in inspect.signature(MODELS[name]).parameters.items()
               if k not in _NOT_OPTIONS and p.default is not inspect.Parameter.empty}  # a partial's own included
    layer, = (m for m in model.modules() if isinstance(m, EquilibriumLayer))  # every registered model has one
    guarantee = layer.operator.frozen().guarantee
    solvers = [k for k, c in SOLVERS.items() if c().refusal(guarantee, layer.activation) is None]
    return ModelInfo(DESCRIPTIONS[name], options, solvers, default_solver(layer.operator.guarantee_type))


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
    channels = options.get("channels")
    if channels is not None:
        base = getattr(cls, "func", cls)
        tiered = getattr(base, "tiered", False)
        if getattr(base, "blocks", False):  # one count or one per block: either is taken as given
            if not isinstance(channels, int) and len(channels) == 1:
                options = {**options, "channels": channels[0]}
        elif tiered and isinstance(channels, int):
            raise InputError(f"model {name!r} has tiers: give one channel count per tier, e.g. --channels 16,32,32")
        elif not tiered and not isinstance(channels, int):
            if len(channels) != 1:
                raise InputError(f"model {name!r} has one channel count (--channels N), got {list(channels)}")
            options = {**options, "channels": channels[0]}
    return cls(input_shape, num_classes, **options)


__all__ = [
    "DESCRIPTIONS",
    "MODELS",
    "ComposedL2",
    "ComposedNemon",
    "ConvMonDEQ",
    "FCMonDEQ",
    "ModelInfo",
    "MultiTierMonDEQ",
    "NemonConv",
    "NemonFC",
    "OptEqConv",
    "OptEqFC",
    "build_model",
    "compose",
    "model_info",
]
