"""Activations as proximal operators (SPEC 1.1).

An activation ``σ = prox_f`` of a convex, closed, proper, separable ``f`` turns the equilibrium
``z = σ(Wz + y)`` into the monotone inclusion ``0 ∈ (I − W)z − y + ∂f(z)`` (Winston & Kolter, 2020,
"Monotone operator equilibrium networks", section 3). Splitting solvers need ``prox^α_f`` for every step
``α > 0``; the backward pass needs ``σ'`` at the equilibrium pre-activation, and the objective of a symmetric
``W`` (OptEq, SPEC 4.5) the value of ``f``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .errors import InputError


class Activation(ABC):
    """A proximal activation: ``prox(v, α) = argmin_u ½‖u − v‖² + α f(u)`` and ``σ = prox(·, 1)``."""

    name: str = ""
    fixes_zero: bool = False
    """Whether ``0`` minimises ``f``, so that ``prox^α_f(0) = 0`` for every ``α`` (solvers starting from zero
    then skip a product)."""

    @abstractmethod
    def prox(self, v: Tensor, alpha: float) -> Tensor:
        """``prox^α_f(v)``, elementwise."""

    @abstractmethod
    def derivative(self, v: Tensor) -> Tensor:
        """``σ'(v) ∈ [0, 1]``, elementwise, at the pre-activation ``v``."""

    def value(self, u: Tensor) -> Tensor:
        """``f(u)``, elementwise (``+∞`` outside its domain); needed only for objectives (OptEq), so an activation
        of one's own need not define it."""
        raise InputError(f"{type(self).__name__} does not give the value of its f: define value() to evaluate it")

    def __call__(self, v: Tensor) -> Tensor:
        return self.prox(v, 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def indicator(inside: Tensor, like: Tensor) -> Tensor:
    """``0`` where ``inside`` holds, ``+∞`` elsewhere, in ``like``'s dtype."""
    return torch.where(inside, torch.zeros((), dtype=like.dtype, device=like.device), math.inf)


class ReLU(Activation):
    """``σ(v) = max(v, 0)``: the prox of the indicator of ``u ≥ 0``, the same for every ``α``."""

    name = "relu"
    fixes_zero = True

    def prox(self, v: Tensor, alpha: float) -> Tensor:
        return torch.relu(v)

    def derivative(self, v: Tensor) -> Tensor:
        return (v > 0).to(v.dtype)

    def value(self, u: Tensor) -> Tensor:
        return indicator(u >= 0, u)


class LeakyReLU(Activation):
    """``σ(v) = v`` for ``v ≥ 0``, ``a·v`` otherwise, ``a ∈ (0, 1]``.

    ``f(u) = (1/a − 1)·u²/2`` for ``u < 0`` (0 otherwise), so ``prox^α_f(v) = v / (1 + α(1/a − 1))`` for
    ``v < 0``.
    """

    name = "leaky_relu"
    fixes_zero = True

    def __init__(self, negative_slope: float = 0.1) -> None:
        if not 0.0 < negative_slope <= 1.0:
            raise InputError(f"LeakyReLU needs a slope in (0, 1], got {negative_slope}")
        self.negative_slope = float(negative_slope)

    def _scale(self, alpha: float) -> float:
        a = self.negative_slope
        return a / (a + alpha * (1.0 - a))

    def prox(self, v: Tensor, alpha: float) -> Tensor:
        return torch.where(v >= 0, v, v * self._scale(alpha))

    def derivative(self, v: Tensor) -> Tensor:
        one = torch.ones((), dtype=v.dtype, device=v.device)
        return torch.where(v > 0, one, one * self.negative_slope)

    def value(self, u: Tensor) -> Tensor:
        return torch.where(u < 0, (0.5 / self.negative_slope - 0.5) * u.square(), torch.zeros_like(u))

    def __repr__(self) -> str:
        return f"LeakyReLU(negative_slope={self.negative_slope})"


class BorderReLU(Activation):
    """ReLU that also zeroes a border of ``width`` pixels of each feature map (SPEC 1.1).

    The prox of the indicator of ``{u ≥ 0, border = 0}``, the same for every ``α``. With a circular
    convolution on a zero-padded image it removes the wrap-around, as in the paper's MNIST models.
    """

    name = "border_relu"
    fixes_zero = True

    def __init__(self, width: int = 1) -> None:
        if width < 1:
            raise InputError(f"BorderReLU needs a width ≥ 1, got {width}")
        self.width = int(width)
        self._masks: dict[tuple, Tensor] = {}

    def mask(self, like: Tensor) -> Tensor:
        """1 inside, 0 on the border, broadcastable to ``like`` (``… × H × W``)."""
        key = (tuple(like.shape[-2:]), like.dtype, like.device)
        m = self._masks.get(key)
        if m is None:
            h, w = key[0]
            if h <= 2 * self.width or w <= 2 * self.width:
                raise InputError(f"a border of {self.width} leaves nothing of a {h}×{w} map")
            m = torch.zeros(h, w, dtype=like.dtype, device=like.device)
            m[self.width : h - self.width, self.width : w - self.width] = 1.0
            self._masks[key] = m
        return m

    def prox(self, v: Tensor, alpha: float) -> Tensor:
        u = torch.relu(v)
        # in place only outside autograd: relu's backward reads its output
        return u * self.mask(v) if u.requires_grad else u.mul_(self.mask(v))

    def derivative(self, v: Tensor) -> Tensor:
        return (v > 0).to(v.dtype).mul_(self.mask(v))

    def value(self, u: Tensor) -> Tensor:
        return indicator((u >= 0) & ((self.mask(u) > 0) | (u == 0)), u)

    def __repr__(self) -> str:
        return f"BorderReLU(width={self.width})"


class Diagonal(Activation):
    """The linear map ``v ↦ d ⊙ v`` with ``d ∈ [0, 1]``: the activation of the adjoint problem (SPEC 3).

    It is the prox of ``f(u) = Σ ½(1/dᵢ − 1)uᵢ²`` (the indicator of ``uᵢ = 0`` where ``dᵢ = 0``), so
    ``prox^α_f(v) = d v / (d + α(1 − d))``; entries with ``d = 0`` are fixed at 0.
    """

    name = "diagonal"
    fixes_zero = True

    def __init__(self, d: Tensor) -> None:
        self.d = d
        self._scales: dict[float, Tensor] = {}

    def prox(self, v: Tensor, alpha: float) -> Tensor:
        scale = self._scales.get(alpha)
        if scale is None:
            scale = self.d / (self.d + alpha * (1.0 - self.d))
            self._scales[alpha] = scale
        return v * scale

    def derivative(self, v: Tensor) -> Tensor:
        return self.d

    def value(self, u: Tensor) -> Tensor:
        d = self.d.expand_as(u)
        quad = 0.5 * (1.0 / d.clamp_min(torch.finfo(u.dtype).tiny) - 1.0) * u.square()
        return torch.where(d > 0, quad, indicator(u == 0, u))

    def __call__(self, v: Tensor) -> Tensor:
        return v * self.d


class Identity(Activation):
    """``σ(v) = v``, the prox of ``f = 0``: the activation of a NEMON's adjoint in pre-activation form (SPEC 4.4)."""

    name = "identity"
    fixes_zero = True

    def prox(self, v: Tensor, alpha: float) -> Tensor:
        return v

    def derivative(self, v: Tensor) -> Tensor:
        return torch.ones_like(v)

    def value(self, u: Tensor) -> Tensor:
        return torch.zeros_like(u)


ACTIVATIONS: dict[str, type[Activation]] = {"relu": ReLU, "leaky_relu": LeakyReLU, "border_relu": BorderReLU}


def get_activation(name: str | Activation, **kwargs: float) -> Activation:
    """An activation by registry name (``relu``, ``leaky_relu``), or the given instance unchanged."""
    if isinstance(name, Activation):
        if kwargs:
            raise InputError(f"options {sorted(kwargs)} given with an activation instance")
        return name
    try:
        cls = ACTIVATIONS[name]
    except KeyError:
        raise InputError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
    return cls(**kwargs)
