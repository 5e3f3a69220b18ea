"""Forward–backward splitting (SPEC 2; Winston & Kolter 2020, section 3.2).

``z⁺ = prox^α_f((1 − α)z + α(Wz + y))`` is a contraction in ℓ2 with factor ``√(1 − 2αm + α²L²)`` for
``0 < α < 2m/L²``, ``L = ‖I − W‖₂``, on an ℓ2 strongly monotone ``I − W``. Without an ``alpha`` the step
``m/L²`` (the fastest guaranteed rate) is used; a given ``alpha`` outside the guarantee is refused.

For a symmetric ``W`` (OptEq) it is proximal gradient on a strongly convex function whose gradient
``(I − W)z − y`` is ``L``-Lipschitz, so every ``0 < α < 2/L`` converges, with factor
``max(|1 − αm|, |1 − αL|)``; the default is ``2/(m + L)``, the fastest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..activations import Activation
from ..errors import UnsafeStepError
from ..operators.base import FrozenOperator
from ..operators.guarantees import Guarantee, StronglyMonotone, Symmetric
from .base import Iteration, Splitting, StateIsCandidate


class _ForwardBackwardIteration(StateIsCandidate):
    def step(self, z: Tensor, check: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        v = self.op.W(z, add=self.y)
        return self.act.prox(torch.lerp(z, v, self.alpha), self.alpha), z, v


@dataclass(frozen=True, kw_only=True)
class ForwardBackward(Splitting):
    """Forward–backward splitting with a provably safe step (see the module docstring)."""

    name = "forward-backward"

    def refusal(self, guarantee: Guarantee, act: Activation) -> str | None:
        return None if isinstance(guarantee, StronglyMonotone) else "it needs an ℓ2 strongly monotone I − W"

    def iteration(self, op: FrozenOperator, act: Activation, y: Tensor, start: Tensor | None = None) -> Iteration:
        return _ForwardBackwardIteration(op, act, y, self.safe_alpha(op), start)

    def safe_alpha(self, op: FrozenOperator) -> float:
        """The step for ``op``: ``m/L²`` by default (``2/(m + L)`` for a symmetric ``W``); a given one must be
        below ``2m/L²`` (``2/L``).

        Raises:
            UnsafeStepError: ``op`` is not proved strongly monotone (``m ≤ 0``), or ``alpha`` is too large.
        """
        if not op.m > 0:
            raise UnsafeStepError(
                f"forward-backward needs a strongly monotone I − W (m > 0) for its guarantee, got m={op.m:g}; "
                "use an operator with m > 0"
            )
        m, lip = op.m, op.lipschitz
        if isinstance(op.guarantee, Symmetric):
            bound, default, rule = 2.0 / lip, 2.0 / (m + lip), "2/L"
        else:
            bound, default, rule = 2.0 * m / lip**2, m / lip**2, "2m/L²"
        alpha = self.given_alpha  # "auto" is the default: the fastest rate m and L guarantee
        if alpha is None:
            return default
        if alpha >= bound:
            raise UnsafeStepError(
                f"forward-backward step alpha={alpha:g} is not provably convergent: it needs "
                f"alpha < {rule} = {bound:.4g} (m={m:g}, L=‖I−W‖₂={lip:.4g}); "
                "leave alpha unset for a safe step, or use Peaceman-Rachford, which converges for any alpha"
            )
        return alpha
