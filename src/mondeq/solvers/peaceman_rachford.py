"""Peaceman–Rachford splitting (SPEC 2; Winston & Kolter 2020, section 3.2).

With ``R = (I + α(I − W))⁻¹`` and the state ``u``::

    z  = prox^α_f(u)
    z½ = R(2z − u + αy)
    u⁺ = u + 2θ(z½ − z)        θ = 1: Peaceman–Rachford, θ = ½: Douglas–Rachford

converges for every ``α > 0``. The candidate equilibrium is ``z½``; between checks its pre-activation is
estimated from the resolvent equation without a product, ``Wz½ + y = ((1 + α)z½ − (2z − u))/α``, and the
solver confirms convergence with the exact product.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..activations import Activation
from ..operators.base import FrozenOperator
from .base import Iteration, Splitting


class _SplittingIteration(Iteration):
    exact_pre_activation = False

    def __init__(self, op: FrozenOperator, act: Activation, y: Tensor, alpha: float, relaxation: float):
        self.act, self.alpha, self.relaxation = act, alpha, relaxation
        self.resolvent = op.resolvent(alpha)
        self.r_ay = self.resolvent.apply(alpha * y)
        self.x0 = torch.zeros_like(y)

    def step(self, u: Tensor, check: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        a = self.alpha
        z = self.act.prox(u, a)
        w = torch.lerp(u, z, 2.0)
        z_half = self.resolvent.apply(w, add=self.r_ay)
        u_next = torch.lerp(w, z_half, 2.0)
        if self.relaxation != 1.0:
            u_next = torch.lerp(u, u_next, self.relaxation)
        if not check:
            return u_next, None, None
        # the resolvent equation (1 + α)z½ − αWz½ = w + αy gives Wz½ + y = ((1 + α)z½ − w)/α, no product
        v = torch.sub(z_half, w, alpha=1.0 / (1.0 + a)).mul_((1.0 + a) / a)
        return u_next, z_half, v


@dataclass(frozen=True, kw_only=True)
class PeacemanRachford(Splitting):
    """Peaceman–Rachford splitting; converges for every ``alpha > 0`` (default 1)."""

    name = "peaceman-rachford"
    relaxation = 1.0

    def iteration(self, op: FrozenOperator, act: Activation, y: Tensor) -> Iteration:
        return _SplittingIteration(op, act, y, 1.0 if self.alpha is None else self.alpha, self.relaxation)
