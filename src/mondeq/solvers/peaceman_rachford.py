"""Peaceman–Rachford splitting (SPEC 2; Winston & Kolter 2020, section 3.2).

With ``R = (I + α(I − W))⁻¹`` and the state ``u``::

    z  = prox^α_f(u)
    z½ = R(2z − u + αy)
    u⁺ = u + 2θ(z½ − z)        θ = 1: Peaceman–Rachford, θ = ½: Douglas–Rachford

converges for every ``α > 0``. The candidate equilibrium is ``z½``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..activations import Activation
from ..operators.base import FrozenOperator
from .base import Iteration, Splitting


class _SplittingIteration(Iteration):
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
        return u_next, z_half, None


@dataclass(frozen=True, kw_only=True)
class PeacemanRachford(Splitting):
    """Peaceman–Rachford splitting; converges for every ``alpha > 0`` (default 1)."""

    name = "peaceman-rachford"
    relaxation = 1.0

    def iteration(self, op: FrozenOperator, act: Activation, y: Tensor) -> Iteration:
        return _SplittingIteration(op, act, y, 1.0 if self.alpha is None else self.alpha, self.relaxation)
