"""The average iteration of a NEMON (SPEC 4.4; Jafarpour, Davydov, Proskurnikov & Bullo 2021, section 4).

``z⁺ = (1 − α)z + ασ(Wz + y)``. With ``μ∞,Δ(W) ≤ μ < 1`` and ``σ`` slope-restricted in ``[0, 1]``, its
Jacobian ``(1 − α)I + αDW`` (``D`` diagonal in ``[0, 1]``) has weighted ℓ∞ norm at most ``1 − α(1 − μ⁺)`` for
``0 < α ≤ α* = 1/(1 − min(minᵢ Wᵢᵢ, 0))``: row ``i`` sums to ``1 − α + αdᵢμᵢ``, its diagonal being
non-negative. So the iteration contracts in ``‖Δ·‖∞`` with that factor. On a transposed NEMON
(ℓ1-contractive) the same holds in ``‖Δ⁻¹·‖₁`` for the identity activation only, which is how the
implicit backward uses it. The default step is ``α*``, recomputed for every frozen operator; a larger given
``alpha`` is refused, never shrunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..activations import Activation, Identity
from ..errors import UnsafeStepError
from ..operators.base import FrozenOperator
from ..operators.guarantees import Guarantee, L1Contractive, LinfContractive
from .base import Iteration, Splitting, StateIsCandidate, writable


class _AverageIteration(StateIsCandidate):
    def step(self, z: Tensor, check: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        v = self.op.W(z, add=self.y)
        fz = self.act(v)
        if writable(fz, z, v):  # z + α(σ(v) − z), in σ(v)'s memory
            return fz.lerp_(z, 1.0 - self.alpha), z, v
        return torch.lerp(z, fz, self.alpha), z, v


@dataclass(frozen=True, kw_only=True)
class Average(Splitting):
    """The average iteration with step ``alpha ≤ α*`` (default ``α*``; see the module docstring)."""

    name = "average"

    def refusal(self, guarantee: Guarantee, act: Activation) -> str | None:
        if isinstance(guarantee, LinfContractive):
            return None
        if isinstance(guarantee, L1Contractive):
            return None if isinstance(act, Identity) else "in the ℓ1 norm it is proved for the identity activation only"
        return "it needs a weighted ℓ∞ contraction (a NEMON); use Peaceman-Rachford or forward-backward"

    def iteration(self, op: FrozenOperator, act: Activation, y: Tensor, start: Tensor | None = None) -> Iteration:
        return _AverageIteration(op, act, y, self.safe_alpha(op), start)

    def safe_alpha(self, op: FrozenOperator) -> float:
        """The step for ``op``: ``α*`` by default; a given one must not exceed it.

        Raises:
            UnsafeStepError: ``alpha > α*``.
        """
        g = op.guarantee
        assert isinstance(g, (LinfContractive, L1Contractive))
        alpha = self.given_alpha  # "auto" is α*
        if alpha is None:
            return g.alpha_max
        if alpha > g.alpha_max:
            raise UnsafeStepError(
                f"average-iteration step alpha={alpha:g} is not provably convergent: it needs "
                f"alpha ≤ α* = 1/(1 − min(min W_ii, 0)) = {g.alpha_max:.4g}; leave alpha unset for α*"
            )
        return alpha
