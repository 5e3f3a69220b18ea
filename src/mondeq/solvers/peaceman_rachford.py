"""Peaceman–Rachford splitting (SPEC 2; Winston & Kolter 2020, section 3.2).

With ``R = (I + α(I − W))⁻¹`` and the state ``u``::

    z  = prox^α_f(u)
    z½ = R(2z − u + αy)
    u⁺ = u + 2θ(z½ − z)        θ = 1: Peaceman–Rachford, θ = ½: Douglas–Rachford

converges for every ``α > 0`` on an ℓ2 strongly monotone ``I − W`` (the state ``u`` contracts in ℓ2); it has
no proof for other operators and refuses them. A warm start ``z₀`` starts from ``u₀ = z₀ + α(Wz₀ + y − z₀)``,
the state whose fixed point is ``z₀`` when ``z₀`` is the equilibrium. The candidate equilibrium is ``z½``;
between checks its pre-activation is estimated from the resolvent equation without a product,
``Wz½ + y = ((1 + α)z½ − (2z − u))/α``, and the solver confirms convergence with the exact product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..activations import Activation
from ..operators.base import FrozenOperator
from ..operators.guarantees import Guarantee, StronglyMonotone
from .base import Iteration, Splitting, writable


class _SplittingIteration(Iteration):
    exact_pre_activation = False

    def __init__(
        self, op: FrozenOperator, act: Activation, y: Tensor, alpha: float, relaxation: float, start: Tensor | None
    ) -> None:
        self.act, self.alpha, self.relaxation = act, alpha, relaxation
        self.resolvent = op.resolvent(alpha)
        self.r_ay = self.resolvent.apply(alpha * y)
        self._zero: Tensor | None = None
        self._u0 = None if start is None else torch.lerp(start, op.W(start, add=y), alpha)

    @property
    def x0(self) -> Tensor:
        if self._u0 is not None:
            u0, self._u0 = self._u0, None
            return u0
        self._zero = torch.zeros_like(self.r_ay)  # held only until the first step
        return self._zero

    def step(self, u: Tensor, check: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        a = self.alpha
        first, self._zero = u is self._zero, None
        if first and self.act.fixes_zero:  # z = prox(0) = 0, w = 0: z½ = R(0) + R(αy) = R(αy), no product
            u_next = self.r_ay * (2.0 * self.relaxation)
            if not check:
                return u_next, None, None
            return u_next, self.r_ay.clone(), self.r_ay * ((1.0 + a) / a)
        z = self.act.prox(u, a)
        # w = 2z − u in z's memory, then u⁺ = 2z½ − w in w's (two state-sized buffers fewer alive at a
        # time), unless the prox handed back something that must not be written
        in_place = writable(z, u)
        w = z.mul_(2.0).sub_(u) if in_place else torch.lerp(u, z, 2.0)
        z_half = self.resolvent.apply(w, add=self.r_ay)
        v = None
        if check:  # the resolvent equation (1 + α)z½ − αWz½ = w + αy gives Wz½ + y = ((1 + α)z½ − w)/α
            v = torch.sub(z_half, w, alpha=1.0 / (1.0 + a)).mul_((1.0 + a) / a)
        u_next = w.mul_(-1.0).add_(z_half, alpha=2.0) if in_place else torch.lerp(w, z_half, 2.0)
        if self.relaxation != 1.0:
            u_next = torch.lerp(u, u_next, self.relaxation)
        return u_next, (z_half if check else None), v


@dataclass(frozen=True, kw_only=True)
class PeacemanRachford(Splitting):
    """Peaceman–Rachford splitting; converges for every ``alpha > 0`` (default 1). ``"auto"``: ``1/√(mL)``
    with ``L`` the power-iteration estimate of ``‖I − W‖₂`` (:meth:`~mondeq.operators.base.FrozenOperator.
    norm_estimate`), the step whose proved contraction factor ``max |1 − αλ|/(1 + αλ)`` over ``λ ∈ [m, L]``
    is smallest."""

    name = "peaceman-rachford"
    relaxation = 1.0

    def refusal(self, guarantee: Guarantee, act: Activation) -> str | None:
        return None if isinstance(guarantee, StronglyMonotone) else "it needs an ℓ2 strongly monotone I − W"

    def iteration(self, op: FrozenOperator, act: Activation, y: Tensor, start: Tensor | None = None) -> Iteration:
        if self.alpha == "auto":
            alpha = 1.0 / math.sqrt(op.m * op.norm_estimate())
        else:
            alpha = 1.0 if self.given_alpha is None else self.given_alpha
        return _SplittingIteration(op, act, y, alpha, self.relaxation, start)
