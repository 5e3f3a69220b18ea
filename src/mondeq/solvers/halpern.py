"""The anchored (Halpern) iteration: the second of OptEq's routes to priors (SPEC 4.5).

``z_{k+1} = β_k a + (1 − β_k)T(z_k)``, ``β_k = 1/(k + 2)``, ``T(z) = σ(Wz + y)``. When ``T`` is nonexpansive
(``‖W‖₂ ≤ 1`` and ``σ`` a proximal map, itself firmly nonexpansive) and has a fixed point, it converges to
``P_Fix(T)(a)``, the fixed point nearest the anchor ``a``, from every starting point (Wittmann 1992,
"Approximation of fixed points of nonexpansive mappings"; ``Σβ_k = ∞``, ``β_k → 0``, ``Σ|β_{k+1} − β_k| < ∞``).
So when the fixed-point set is not a point (OptEq with ``‖V‖₂ = 1``), the anchor selects one: the prior
"nearest to ``a``". Its residual decays like ``O(1/k)`` (``‖z_k − T(z_k)‖ ≤ 2‖a − z*‖/(k + 1)`` from ``z₀ = a``;
Lieder 2021, "On the convergence rate of the Halpern-iteration"), not linearly, hence its own defaults: a
looser tolerance and more iterations. It is proved for :class:`~mondeq.operators.guarantees.Nonexpansive`
operators and for symmetric ones with ``‖W‖₂ ≤ 1`` (unique fixed point); Anderson acceleration would lose the
selection and is refused.

Gradients: where the fixed-point set is not a point the equilibrium is not a differentiable function of the
parameters in general (``I − DW`` is singular on it), so selection is for inference only; the implicit
backward refuses a :class:`~mondeq.operators.guarantees.Nonexpansive` operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from ..activations import Activation
from ..errors import InputError
from ..operators.base import FrozenOperator
from ..operators.guarantees import Guarantee, Nonexpansive, Symmetric
from .base import Iteration, Splitting, check_shape


class _HalpernIteration(Iteration):
    def __init__(self, op: FrozenOperator, act: Activation, y: Tensor, anchor: Tensor, start: Tensor | None) -> None:
        self.op, self.act, self.y, self.anchor, self.alpha = op, act, y, anchor, 1.0
        self._start = start
        self.k = 0

    @property
    def x0(self) -> Tensor:
        return self.anchor.clone() if self._start is None else self._start

    def step(self, z: Tensor, check: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        v = self.op.W(z, add=self.y)
        beta = 1.0 / (self.k + 2)
        self.k += 1
        return torch.lerp(self.act(v), self.anchor, beta), z, v


@dataclass(frozen=True, kw_only=True)
class Halpern(Splitting):
    """The anchored iteration (see the module docstring).

    Args:
        anchor: the point ``a`` whose nearest fixed point is selected, one per sample (``None``: the starting
            point, zero by default). Without a ``start`` the iteration starts at the anchor (the start its rate
            is stated for), not at zero.
        tol, max_iter: as for every solver, with defaults for its ``O(1/k)`` rate.
    """

    name = "halpern"
    accelerable: ClassVar[bool] = False
    anchor: Tensor | None = field(default=None, compare=False, repr=False)
    tol: float = 1e-3
    max_iter: int = 20000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha is not None and self.alpha != 1.0:
            raise InputError(f"halpern takes no step size (T is σ(Wz + y)), got alpha={self.alpha}")

    def refusal(self, guarantee: Guarantee, act: Activation) -> str | None:
        if isinstance(guarantee, Nonexpansive) or (isinstance(guarantee, Symmetric) and guarantee.nonexpansive):
            return None
        return "it needs ‖W‖₂ ≤ 1 (a nonexpansive σ(Wz + y)): an OptEq operator"

    def iteration(self, op: FrozenOperator, act: Activation, y: Tensor, start: Tensor | None = None) -> Iteration:
        if self.anchor is None:
            anchor = torch.zeros_like(y) if start is None else start
        else:
            check_shape(self.anchor, op.shape, "anchor")
            if self.anchor.shape != y.shape:
                raise InputError(f"the anchor is {tuple(self.anchor.shape)} but y is {tuple(y.shape)}")
            anchor = self.anchor.detach().to(device=y.device, dtype=y.dtype)
        return _HalpernIteration(op, act, y, anchor, start)
