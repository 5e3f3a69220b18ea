"""Certified training (SPEC 5): losses whose minimisation makes the certificates large.

* ``inf`` (NEMON): the interval-bound loss of Gowal et al. 2018, "On the effectiveness of interval bound
  propagation", through the equilibrium: the cross-entropy of the worst-case logit differences over the
  ℓ∞ ball, bounded by the mixed-monotone embedding (:mod:`mondeq.robustness.interval`) and differentiated
  implicitly, mixed with the clean cross-entropy as ``κ·clean + (1 − κ)·worst``.
* ``2``: the Lipschitz-margin loss of Tsuzuku, Sato & Sugiyama 2018: every other logit is raised by ``ε·Lᵢⱼ``
  (the pair bound of the model's ``lipschitz("2", …, differentiable=True)``: through the head for monDEQ and
  OptEq, through every parameter for NEMON, whose ℓ∞ bound is an ℓ2 one too) before the cross-entropy, mixed
  in the same way.

``ε`` is 0 for ``warmup`` epochs, then grows linearly to its final value over ``ramp`` epochs while ``κ`` falls
from 1 to ``mix``. ``ε`` is on the pixel scale; the ball is cut to ``[0, 1]`` and mapped per channel by the
:class:`~mondeq.normalization.Normalization`, and the ℓ2 pair bounds are those of the normalised input map.
"""

from __future__ import annotations

import math
from typing import Protocol, cast

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..normalization import Normalization
from .lipschitz import Certifiable


class _LinfLipschitz(Protocol):
    """A model with an ℓ∞ Lipschitz bound of its logits (NEMON)."""

    def linf_lipschitz(self, normalization: Normalization, p: float = ...) -> Tensor: ...


class LipschitzPenalty:
    """The training regulariser of a NEMON classifier: ``λ`` times an upper bound of its ℓ∞ Lipschitz bound on
    the pixel scale (SPEC 4.4), with ℓ8 norms of the row sums of ``ΔU`` and ``CRΔ⁻¹`` in place of their maxima
    (at most ``n^(1/8)`` times larger), so that every row is pushed down and not only the largest one of each
    step. Differentiable through ``U``, ``Δ``, ``T`` and the head. Call it with the model."""

    p = 8.0

    def __init__(self, weight: float, normalization: Normalization) -> None:
        if not weight >= 0:
            raise InputError(f"the Lipschitz penalty must be ≥ 0, got {weight}")
        self.weight, self.normalization = float(weight), normalization

    def __call__(self, model: nn.Module) -> Tensor:
        if not hasattr(model, "linf_lipschitz"):
            raise InputError(f"--lipschitz-reg needs a NEMON model (an ℓ∞ bound), not {type(model).__name__}")
        return self.weight * cast(_LinfLipschitz, model).linf_lipschitz(self.normalization, self.p)


class CertifiedLoss:
    """The certified-training loss of ``norm`` (``"inf"``: interval bounds; ``"2"``: Lipschitz margin).

    Args:
        norm: ``"inf"`` or ``"2"``.
        eps: the final training radius on the pixel scale.
        normalization: the per-channel input normalisation.
        warmup, ramp: epochs of clean training, then of the linear ramp of ``ε`` (and of ``κ``).
        mix: the final weight ``κ`` of the clean cross-entropy.
    """

    def __init__(
        self, norm: str, eps: float, normalization: Normalization, warmup: float = 1.0, ramp: float = 5.0,
        mix: float = 0.5,
    ) -> None:
        if norm not in ("inf", "2"):
            raise InputError(f"--certified-train must be 2 or inf, got {norm!r}")
        if not (eps > 0 and math.isfinite(eps)) or not warmup >= 0 or not ramp >= 0 or not 0 <= mix <= 1:
            raise InputError(f"certified training needs eps > 0, warmup and ramp ≥ 0, mix in [0, 1]; got "
                             f"{eps}, {warmup}, {ramp}, {mix}")
        self.norm, self.eps, self.warmup, self.ramp, self.mix = norm, float(eps), warmup, ramp, mix
        self.normalization = normalization

    def schedule(self, epochs_done: float) -> tuple[float, float]:
        """``(ε, κ)`` after ``epochs_done`` (fractional) epochs."""
        t = epochs_done - self.warmup
        frac = 0.0 if t <= 0 else 1.0 if t >= self.ramp else t / self.ramp
        return self.eps * frac, 1.0 - (1.0 - self.mix) * frac

    def check(self, model: nn.Module) -> None:
        """Refuse a model this loss has no bound for (before any training)."""
        if self.norm == "inf" and not hasattr(model, "interval_training"):
            raise InputError(f"--certified-train inf needs a NEMON model (interval bounds), not {type(model).__name__}")
        if self.norm == "2" and not isinstance(model, Certifiable):
            raise InputError(f"--certified-train 2 needs a model with a Lipschitz bound, not {type(model).__name__}")

    def __call__(self, model: nn.Module, x: Tensor, labels: Tensor, logits: Tensor, epochs_done: float) -> Tensor:
        """The loss of one batch ``x`` (normalised) whose clean ``logits`` are given."""
        eps, kappa = self.schedule(epochs_done)
        clean = F.cross_entropy(logits, labels)
        if eps == 0:
            return clean
        if self.norm == "inf":
            pixels = self.normalization.invert(x)
            worst = model.interval_training(*self.normalization.box(pixels, eps), labels)  # type: ignore[operator]
        else:
            pairs = model.lipschitz("2", self.normalization, differentiable=True).pairs  # type: ignore[operator]
            worst = logits + eps * pairs[labels]  # the label's own entry is 0
        return kappa * clean + (1 - kappa) * F.cross_entropy(worst, labels)
