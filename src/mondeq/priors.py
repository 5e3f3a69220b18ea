"""Convex priors composed into an activation: the first of OptEq's two routes to priors (SPEC 4.5).

Adding a convex prior ``R`` to the objective ``G`` of a symmetric ``W`` makes the equilibrium
``z = prox_{f+R}(Wz + y)``: the activation becomes ``prox_{f+R}``. Solvers need ``prox^α_{f+R}`` for every step
``α > 0``, and for the priors offered here it is a composition of known proximal maps, elementwise (``f`` and
``R`` are separable; in one dimension):

* ``R = λ|·|`` (:class:`L1`): ``prox^α_{f+R} = prox^α_f ∘ soft_{αλ}`` whenever ``0`` minimises ``f`` (the
  activation's ``fixes_zero``). Proof (Yu 2013, "On decomposing the proximal map"): with ``u = soft(x)``,
  ``x − u ∈ α∂R(u)``; with ``v = prox^α_f(u)``, ``u − v ∈ α∂f(v)``. A one-dimensional prox moves towards a
  minimiser of ``f`` without passing it, so ``v`` lies between ``0`` and ``u``: ``sign v ∈ {sign u, 0}`` and
  ``∂R(u) ⊆ ∂R(v)``. Hence ``x − v ∈ α(∂R(v) + ∂f(v)) ⊆ α∂(f + R)(v)``, i.e. ``v = prox^α_{f+R}(x)``.
  (The other order is wrong: for the leaky ReLU, ``soft(a·x)`` ≠ ``a·soft(x)`` at ``x < −λ``.)
* ``R`` the indicator of an interval ``[lo, hi]`` (:class:`Box`, :class:`NonNegative`):
  ``prox^α_{f+R} = clamp(prox^α_f(·), lo, hi)`` for every convex ``f`` with ``dom f ∩ [lo, hi] ≠ ∅``. Proof:
  ``h(u) = ½(u − x)² + αf(u)`` is convex in one variable with minimiser ``u* = prox^α_f(x)``, so it increases
  away from ``u*``; its minimiser over the interval is the interval's point nearest ``u*``, which lies in
  ``dom f`` (an interval containing ``u*`` and meeting ``[lo, hi]``).

The composed activation is again the prox of a convex function (``f + R``), slope-restricted in ``[0, 1]``, so
every solver's guarantee carries over; its derivative is the chain rule's, and its ``value`` is ``f + R``.
A pair outside these rules is refused.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .activations import Activation, BorderReLU, Identity, LeakyReLU, ReLU, indicator
from .errors import InputError


class Prior(ABC):
    """A separable convex prior ``R`` with its proximal map."""

    name: str = ""
    first: bool
    """Whether its prox is applied before the activation's (``prox_f ∘ prox_R``) or after (``prox_R ∘ prox_f``)."""

    @abstractmethod
    def prox(self, v: Tensor, alpha: float) -> Tensor:
        """``prox^α_R(v)``, elementwise."""

    @abstractmethod
    def derivative(self, v: Tensor, alpha: float) -> Tensor:
        """The derivative of ``prox^α_R`` at ``v``, elementwise."""

    @abstractmethod
    def value(self, u: Tensor) -> Tensor:
        """``R(u)``, elementwise."""

    @abstractmethod
    def refusal(self, act: Activation) -> str | None:
        """Why the composition rule is not proved for ``act`` (``None``: it is)."""


class L1(Prior):
    """``R(u) = λ|u|`` (sparsity), ``prox^α_R`` the soft threshold at ``αλ``."""

    name = "l1"
    first = True

    def __init__(self, weight: float) -> None:
        if not weight >= 0 or not math.isfinite(weight):
            raise InputError(f"the l1 prior needs a weight ≥ 0, got {weight}")
        self.weight = float(weight)

    def prox(self, v: Tensor, alpha: float) -> Tensor:
        return torch.nn.functional.softshrink(v, alpha * self.weight) if self.weight > 0 else v

    def derivative(self, v: Tensor, alpha: float) -> Tensor:
        return (v.abs() > alpha * self.weight).to(v.dtype)

    def value(self, u: Tensor) -> Tensor:
        return self.weight * u.abs()

    def refusal(self, act: Activation) -> str | None:
        return None if act.fixes_zero else "the rule needs an activation whose f is minimised at 0"

    def __repr__(self) -> str:
        return f"L1({self.weight:g})"


class Box(Prior):
    """``R`` the indicator of ``lo ≤ u ≤ hi``, ``prox^α_R`` the clamp."""

    name = "box"
    first = False

    def __init__(self, lo: float, hi: float) -> None:
        if not lo <= hi or math.isnan(lo) or math.isnan(hi):
            raise InputError(f"a box prior needs lo ≤ hi, got [{lo}, {hi}]")
        self.lo, self.hi = float(lo), float(hi)

    def prox(self, v: Tensor, alpha: float) -> Tensor:
        return v.clamp(self.lo, self.hi)

    def derivative(self, v: Tensor, alpha: float) -> Tensor:
        return ((v > self.lo) & (v < self.hi)).to(v.dtype)

    def value(self, u: Tensor) -> Tensor:
        return indicator((u >= self.lo) & (u <= self.hi), u)

    def refusal(self, act: Activation) -> str | None:
        domain = _domain(act)
        if domain is None:
            return f"the domain of {act!r}'s f is not known to be an interval"
        lo, hi = max(domain[0], self.lo), min(domain[1], self.hi)
        return None if lo <= hi else f"[{self.lo:g}, {self.hi:g}] does not meet the domain of {act!r}'s f"

    def __repr__(self) -> str:
        return f"Box({self.lo:g}, {self.hi:g})"


class NonNegative(Box):
    """``R`` the indicator of ``u ≥ 0``."""

    name = "nonneg"

    def __init__(self) -> None:
        super().__init__(0.0, math.inf)

    def __repr__(self) -> str:
        return "NonNegative()"


def _domain(act: Activation) -> tuple[float, float] | None:
    """An interval containing ``0`` that every coordinate's ``dom f`` contains and meets a box in only through
    it: ``[0, ∞)`` for ReLU, ``{0}`` for the zeroed border of :class:`BorderReLU`, ``ℝ`` for the identity and
    the leaky ReLU."""
    if isinstance(act, BorderReLU):
        return (0.0, 0.0)  # the border's domain; the interior's [0, ∞) contains it
    if isinstance(act, ReLU):
        return (0.0, math.inf)
    if isinstance(act, (Identity, LeakyReLU)):
        return (-math.inf, math.inf)
    return None


class WithPrior(Activation):
    """The activation ``prox_{f+R}`` of ``act = prox_f`` and a prior ``R`` (see the module docstring).

    Raises:
        InputError: the composition rule is not proved for this pair.
    """

    name = "with_prior"

    def __init__(self, act: Activation, prior: Prior) -> None:
        why = prior.refusal(act)
        if why is not None:
            raise InputError(f"the prior {prior!r} cannot be composed with {act!r}: {why}")
        self.act, self.prior = act, prior
        # 0 minimises f + R when it minimises both: f by fixes_zero, R (each offered one is ≥ 0) when R(0) = 0
        self.fixes_zero = act.fixes_zero and bool(prior.value(torch.zeros(())) == 0)

    def prox(self, v: Tensor, alpha: float) -> Tensor:
        if self.prior.first:
            return self.act.prox(self.prior.prox(v, alpha), alpha)
        return self.prior.prox(self.act.prox(v, alpha), alpha)

    def derivative(self, v: Tensor) -> Tensor:
        if self.prior.first:
            return self.act.derivative(self.prior.prox(v, 1.0)) * self.prior.derivative(v, 1.0)
        return self.prior.derivative(self.act(v), 1.0) * self.act.derivative(v)

    def value(self, u: Tensor) -> Tensor:
        return self.act.value(u) + self.prior.value(u)

    def __repr__(self) -> str:
        return f"WithPrior({self.act!r}, {self.prior!r})"


PRIORS = ("l1", "box", "nonneg")


def get_prior(name: str, weight: float = 1.0) -> Prior:
    """A prior by name: ``l1`` (``λ = weight``), ``box`` (the interval ``[−weight, weight]``), ``nonneg``."""
    if name == "l1":
        return L1(weight)
    if name == "box":
        return Box(-weight, weight)
    if name == "nonneg":
        return NonNegative()
    raise InputError(f"unknown prior {name!r}; choose one of {list(PRIORS)}")
