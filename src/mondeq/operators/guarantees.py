"""What is proved about an operator ``W``, as objects that solvers check before they run (SPEC 1.2, 4.4, 4.5).

A :class:`Guarantee` names the norm in which the equilibrium problem ``z = σ(Wz + y)`` is well behaved, turns
a fixed-point residual ``‖z − σ(Wz + y)‖`` measured in that norm into a bound on ``‖z − z*‖`` (valid for every
activation ``σ`` that is the proximal operator of a convex function, i.e. slope-restricted in ``[0, 1]``, unless
a class says otherwise), and gives the guarantee of ``Wᵀ``:

* :class:`StronglyMonotone` — ``(I − W) + (I − W)ᵀ ⪰ 2mI`` and ``‖I − W‖₂ ≤ L``: monDEQ (ℓ2).
* :class:`Symmetric` — additionally ``W = Wᵀ``: OptEq's ``VᵀV`` with ``‖V‖₂ < 1``.
* :class:`Nonexpansive` — ``‖W‖₂ ≤ 1`` only: OptEq's ``VᵀV`` with ``‖V‖₂ = 1``, whose fixed-point set need not be a
  point (SPEC 4.5); no error bound holds.
* :class:`LinfContractive` — ``μ∞,Δ(W) = μ∞(ΔWΔ⁻¹) ≤ μ < 1`` with ``Δ = diag(weights)``: NEMON. Its
  transpose is :class:`L1Contractive` (``μ1,Δ⁻¹(Wᵀ) = μ∞,Δ(W)``).

Error bounds, with ``r = z − σ(Wz + y)`` and ``e = z − z*``:

* ℓ2: ``σ(Wz + y) = z − r`` and ``z*`` are proximal points, so monotonicity of ``∂f`` gives
  ``⟨(W − I)e + r, e − r⟩ ≥ 0``, hence ``m‖e‖² ≤ ⟨(2I − W)e, r⟩`` and ``‖e‖₂ ≤ (1 + L)‖r‖₂ / m``.
* ℓ∞,Δ: ``σ(a) − σ(b) = D(a − b)`` with ``D`` diagonal in ``[0, 1]``, so ``(I − DW)e = r``; in the row ``i``
  where ``|Δe|`` is largest, ``|e|(1 − dᵢμᵢ) ≤ |r|`` with ``μᵢ`` the row's measure, hence
  ``‖e‖∞,Δ ≤ ‖r‖∞,Δ / (1 − μ⁺)``, ``μ⁺ = max(μ, 0)``.
* ℓ1,Δ⁻¹ (identity activation only): ``(I − Wᵀ)e = r`` and ``‖(I − Wᵀ)⁻¹‖1,Δ⁻¹ = ‖(I − W)⁻¹‖∞,Δ ≤ 1/(1 − μ⁺)``.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor


def l2_norm(x: Tensor) -> Tensor:
    """Per-sample ℓ2 norm over all non-batch dimensions (at least float32)."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1, dtype=torch.promote_types(x.dtype, torch.float32))


class Guarantee(ABC):
    """What is proved about ``W``: the norm it is stated in, an error bound, and the guarantee of ``Wᵀ``."""

    @abstractmethod
    def norm(self, x: Tensor) -> Tensor:
        """Per-sample norm of a batch ``x`` of shape ``(batch, *shape)`` (at least float32)."""

    @abstractmethod
    def error_bound(self, residual: Tensor) -> Tensor:
        """A bound on ``‖z − z*‖`` (in :meth:`norm`) from the residual ``‖z − σ(Wz + y)‖`` in the same norm."""

    @abstractmethod
    def dual(self) -> Guarantee:
        """The guarantee of ``Wᵀ``."""

    @abstractmethod
    def describe(self) -> str:
        """One line for error messages."""


@dataclass(frozen=True, eq=False)
class StronglyMonotone(Guarantee):
    """``sym(I − W) ⪰ mI`` and ``‖I − W‖₂ ≤ L`` (SPEC 1.2); ``L`` is computed on first use by ``norm_bound``.

    Args:
        m: the strong monotonicity, ``> 0`` for every guarantee a solver accepts.
        norm_bound: returns an upper bound of ``‖I − W‖₂``.
    """

    m: float
    norm_bound: Callable[[], float] = field(repr=False)

    @functools.cached_property
    def lipschitz(self) -> float:
        """``L ≥ ‖I − W‖₂``, computed once."""
        return float(self.norm_bound())

    def norm(self, x: Tensor) -> Tensor:
        return l2_norm(x)

    def error_bound(self, residual: Tensor) -> Tensor:
        return residual * ((1.0 + self.lipschitz) / self.m)

    def dual(self) -> Guarantee:
        return self  # sym(I − Wᵀ) = sym(I − W) and ‖I − Wᵀ‖₂ = ‖I − W‖₂

    def describe(self) -> str:
        return f"ℓ2 strongly monotone with m={self.m:g}"


@dataclass(frozen=True, eq=False)
class Symmetric(StronglyMonotone):
    """``W = Wᵀ`` with ``mI ⪯ I − W`` and ``‖I − W‖₂ ≤ L``: the equilibrium minimises a strongly convex
    function whose gradient is ``L``-Lipschitz (SPEC 4.5)."""

    def describe(self) -> str:
        return f"symmetric, ℓ2 strongly monotone with m={self.m:g}"

    @property
    def nonexpansive(self) -> bool:
        """Whether ``‖W‖₂ ≤ 1`` follows: the eigenvalues of ``W`` lie in ``[1 − L, 1 − m] ⊂ [−1, 1]`` when
        ``m ≥ 0`` and ``L ≤ 2``."""
        return self.m >= 0.0 and self.lipschitz <= 2.0


@dataclass(frozen=True, eq=False)
class Nonexpansive(Guarantee):
    """``‖W‖₂ ≤ 1``: ``z ↦ σ(Wz + y)`` is ℓ2-nonexpansive for every proximal ``σ``, but its fixed points
    (if any) need not be unique, so a residual bounds no distance to a particular one (SPEC 4.5).

    Args:
        symmetric: whether ``W = Wᵀ`` too (then the fixed points minimise a convex objective).
    """

    symmetric: bool = False

    def norm(self, x: Tensor) -> Tensor:
        return l2_norm(x)

    def error_bound(self, residual: Tensor) -> Tensor:
        return torch.full_like(residual, math.inf)

    def dual(self) -> Guarantee:
        return self  # ‖Wᵀ‖₂ = ‖W‖₂

    def describe(self) -> str:
        kind = "symmetric, " if self.symmetric else ""
        return f"{kind}ℓ2-nonexpansive (‖W‖₂ ≤ 1; fixed points need not be unique)"


@dataclass(frozen=True, eq=False)
class _Contractive(Guarantee):
    mu: float
    weights: Tensor = field(repr=False)
    min_diagonal: float

    @property
    def mu_plus(self) -> float:
        """``max(μ, 0)``."""
        return max(self.mu, 0.0)

    @property
    def alpha_max(self) -> float:
        """``α* = 1 / (1 − min(minᵢ Wᵢᵢ, 0))``: the largest step of the average iteration it is proved for."""
        return 1.0 / (1.0 - min(self.min_diagonal, 0.0))

    def rate(self, alpha: float) -> float:
        """The contraction factor ``1 − α(1 − μ⁺)`` of the average iteration with step ``alpha ≤ α*``."""
        return 1.0 - alpha * (1.0 - self.mu_plus)

    def error_bound(self, residual: Tensor) -> Tensor:
        return residual / (1.0 - self.mu_plus)


@dataclass(frozen=True, eq=False)
class LinfContractive(_Contractive):
    """``μ∞,Δ(W) ≤ μ < 1`` (SPEC 4.4), ``Δ = diag(weights)`` (``weights`` broadcast to a sample's shape).

    The norm is ``‖Δz‖∞``. The average iteration contracts in it for any activation slope-restricted in
    ``[0, 1]`` and step ``α ≤ α*``.
    """

    def norm(self, x: Tensor) -> Tensor:
        w = self.weights.to(torch.promote_types(x.dtype, torch.float32))
        return (x.abs() * w).flatten(1).amax(dim=1)

    def dual(self) -> Guarantee:
        return L1Contractive(self.mu, self.weights, self.min_diagonal)

    def describe(self) -> str:
        return f"ℓ∞-contractive (weighted ℓ∞ measure {self.mu:.4g} < 1)"


@dataclass(frozen=True, eq=False)
class L1Contractive(_Contractive):
    """``μ1,Δ⁻¹(W) ≤ μ < 1`` in the norm ``‖Δ⁻¹z‖₁``: the transpose of a :class:`LinfContractive` operator.

    The average iteration contracts in this norm only for the identity activation: with a nonlinear ``σ``
    its Jacobian ``(1 − α)I + αDW`` can have ``‖·‖1,Δ⁻¹ > 1`` where ``D`` vanishes. The implicit backward of a
    NEMON therefore iterates on the pre-activation ``h = Wᵀu + g`` (operator ``WᵀD``, identity activation).
    """

    def norm(self, x: Tensor) -> Tensor:
        w = self.weights.to(torch.promote_types(x.dtype, torch.float32))
        return (x.abs() / w).flatten(1).sum(dim=1)

    def dual(self) -> Guarantee:
        return LinfContractive(self.mu, self.weights, self.min_diagonal)

    def right_scaled(self) -> L1Contractive:
        """The guarantee of ``WD`` for any diagonal ``D`` with entries in ``[0, 1]`` (``W`` this one's):
        ``μ1,Δ⁻¹(WD) ≤ μ⁺`` and its diagonal is at least ``min(minᵢ Wᵢᵢ, 0)``."""
        return L1Contractive(self.mu_plus, self.weights, min(self.min_diagonal, 0.0))

    def describe(self) -> str:
        return f"ℓ1-contractive (weighted ℓ1 measure {self.mu:.4g} < 1)"
