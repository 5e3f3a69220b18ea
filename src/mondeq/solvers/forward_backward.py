"""Forward–backward splitting (SPEC 2; Winston & Kolter 2020, section 3.2).

``z⁺ = prox^α_f((1 − α)z + α(Wz + y))`` is a contraction with factor ``√(1 − 2αm + α²L²)`` for
``0 < α < 2m/L²``, ``L = ‖I − W‖₂``. Without an ``alpha`` the step ``m/L²`` (the fastest guaranteed rate)
is used; a given ``alpha`` outside the guarantee is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..activations import Activation
from ..errors import UnsafeStepError
from ..operators.base import FrozenOperator
from .base import Iteration, Splitting


class _ForwardBackwardIteration(Iteration):
    def __init__(self, op: FrozenOperator, act: Activation, y: Tensor, alpha: float) -> None:
        self.op, self.act, self.y, self.alpha = op, act, y, alpha

    @property
    def x0(self) -> Tensor:  # made on request, not held through the solve
        return torch.zeros_like(self.y)

    def step(self, z: Tensor, check: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        v = self.op.W(z, add=self.y)
        return self.act.prox(torch.lerp(z, v, self.alpha), self.alpha), z, v


@dataclass(frozen=True, kw_only=True)
class ForwardBackward(Splitting):
    """Forward–backward splitting with a provably safe step (see the module docstring)."""

    name = "forward-backward"

    def iteration(self, op: FrozenOperator, act: Activation, y: Tensor) -> Iteration:
        return _ForwardBackwardIteration(op, act, y, self.safe_alpha(op))

    def safe_alpha(self, op: FrozenOperator) -> float:
        """The step for ``op``: ``m/L²`` by default; a given one must be below ``2m/L²``.

        Raises:
            UnsafeStepError: ``op`` is not proved strongly monotone (``m ≤ 0``), or ``alpha ≥ 2m/L²``.
        """
        if not op.m > 0:
            raise UnsafeStepError(
                f"forward-backward needs a strongly monotone I − W (m > 0) for its guarantee, got m={op.m:g}; "
                "use an operator with m > 0"
            )
        bound = 2.0 * op.m / op.lipschitz**2
        if self.alpha is None:
            return bound / 2.0
        if self.alpha >= bound:
            raise UnsafeStepError(
                f"forward-backward step alpha={self.alpha:g} is not provably convergent: it needs "
                f"alpha < 2m/L² = {bound:.4g} (m={op.m:g}, L=‖I−W‖₂={op.lipschitz:.4g}); "
                "leave alpha unset for a safe step, or use Peaceman-Rachford, which converges for any alpha"
            )
        return self.alpha
