"""Certified training (SPEC 5): losses whose minimisation makes the certificates large.

* ``inf`` (NEMON): the interval-bound loss of Gowal et al. 2018, "On the effectiveness of interval bound
  propagation", through the equilibrium: the cross-entropy of the worst-case logit differences over the
  ℓ∞ ball, bounded by the mixed-monotone embedding (:mod:`mondeq.robustness.interval`) and differentiated
  implicitly, mixed with the clean cross-entropy as ``κ·clean + (1 − κ)·worst``.
* ``2`` (ℓ2 families): the Lipschitz-margin loss of Tsuzuku, Sato & Sugiyama 2018: every other logit is raised
  by ``ε·Lᵢⱼ`` (the pair bound of :func:`~mondeq.robustness.lipschitz.lipschitz_l2`, differentiable in the
  head) before the cross-entropy, mixed in the same way.

``ε`` is 0 for ``warmup`` epochs, then grows linearly to its final value over ``ramp`` epochs while ``κ`` falls
from 1 to ``mix``. ``ε`` is on the pixel scale; the ball is cut to ``[0, 1]`` and mapped per channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .interval import ibp_worst_logits
from .lipschitz import lipschitz_l2


class LipschitzPenalty:
    """The training regulariser of a NEMON classifier: ``λ`` times an upper bound of its ℓ∞ Lipschitz bound on
    the pixel scale (SPEC 4.4), with ℓ8 norms of the row sums of ``ΔU`` and ``CRΔ⁻¹`` in place of their maxima
    (at most ``n^(1/8)`` times larger), so that every row is pushed down and not only the largest one of each
    step. Differentiable through ``U``, ``Δ``, ``T`` and the head. Call it with the model."""

    p = 8.0

    def __init__(self, weight: float, std: Sequence[float]) -> None:
        if not weight >= 0:
            raise InputError(f"the Lipschitz penalty must be ≥ 0, got {weight}")
        self.weight, self.std = float(weight), tuple(std)

    def __call__(self, model: nn.Module) -> Tensor:
        if not hasattr(model, "linf_lipschitz"):
            raise InputError(f"--lipschitz-reg needs a NEMON model (an ℓ∞ bound), not {type(model).__name__}")
        return self.weight * model.linf_lipschitz(self.std, self.p)


class CertifiedLoss:
    """The certified-training loss of ``norm`` (``"inf"``: interval bounds; ``"2"``: Lipschitz margin).

    Args:
        norm: ``"inf"`` or ``"2"``.
        eps: the final training radius on the pixel scale.
        mean, std: the per-channel input normalisation ``(x − mean)/std``.
        warmup, ramp: epochs of clean training, then of the linear ramp of ``ε`` (and of ``κ``).
        mix: the final weight ``κ`` of the clean cross-entropy.
    """

    def __init__(
        self, norm: str, eps: float, mean: Sequence[float], std: Sequence[float], warmup: float = 1.0,
        ramp: float = 5.0, mix: float = 0.5,
    ) -> None:
        if norm not in ("inf", "2"):
            raise InputError(f"--certified-train must be 2 or inf, got {norm!r}")
        if not (eps > 0 and math.isfinite(eps)) or not warmup >= 0 or not ramp >= 0 or not 0 <= mix <= 1:
            raise InputError(f"certified training needs eps > 0, warmup and ramp ≥ 0, mix in [0, 1]; got "
                             f"{eps}, {warmup}, {ramp}, {mix}")
        self.norm, self.eps, self.warmup, self.ramp, self.mix = norm, float(eps), warmup, ramp, mix
        self.mean, self.std = tuple(mean), tuple(std)

    def schedule(self, epochs_done: float) -> tuple[float, float]:
        """``(ε, κ)`` after ``epochs_done`` (fractional) epochs."""
        t = epochs_done - self.warmup
        frac = 0.0 if t <= 0 else 1.0 if t >= self.ramp else t / self.ramp
        return self.eps * frac, 1.0 - (1.0 - self.mix) * frac

    def check(self, model: nn.Module) -> None:
        """Refuse a model this loss has no bound for (before any training)."""
        if self.norm == "inf" and not hasattr(model, "input_box"):
            raise InputError(f"--certified-train inf needs a NEMON model (interval bounds), not {type(model).__name__}")
        if self.norm == "2":
            lipschitz_l2(model)

    def __call__(self, model: nn.Module, x: Tensor, labels: Tensor, logits: Tensor, epochs_done: float) -> Tensor:
        """The loss of one batch ``x`` (normalised) whose clean ``logits`` are given."""
        eps, kappa = self.schedule(epochs_done)
        clean = F.cross_entropy(logits, labels)
        if eps == 0:
            return clean
        if self.norm == "inf":
            shape = (1, -1, *[1] * (x.dim() - 2))
            m = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
            s = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
            lo = torch.maximum(x - eps / s, (0 - m) / s)
            hi = torch.minimum(x + eps / s, (1 - m) / s)
            worst = ibp_worst_logits(model, lo, hi, labels)
        else:
            pairs = lipschitz_l2(model, differentiable=True)[1] / min(self.std)
            worst = logits + eps * pairs[labels]  # the label's own entry is 0
        return kappa * clean + (1 - kappa) * F.cross_entropy(worst, labels)
