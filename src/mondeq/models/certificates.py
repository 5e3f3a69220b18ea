"""The certificates of the ℓ2 families, monDEQ and OptEq (SPEC 5; Winston & Kolter 2020, section 5).

With ``I − W`` ``m``-strongly monotone and ``σ`` non-expansive, ``‖z*(x₁) − z*(x₂)‖₂ ≤ ‖UD⁻¹‖₂/m · ‖x₁ − x₂‖₂``
for pixels ``x`` (``D = diag(std)`` per channel: the normalisation composed into the input map ``U``); the
logits ``y = C·R(z*) + c`` are then ``‖C‖₂‖R‖₂‖UD⁻¹‖₂/m``-Lipschitz and ``yᵢ − yⱼ`` is
``‖Cᵢ − Cⱼ‖₂‖R‖₂‖UD⁻¹‖₂/m``-Lipschitz. In the ℓ∞ norm of the pixels the state moves by at most
``‖UD⁻¹‖∞→2/m · ‖δ‖∞``, and ``‖A‖∞→2 ≤ min(√d‖A‖₂, ‖|A|𝟙‖₂)`` (``d`` the pixels; ``|Aδ| ≤ |A|𝟙‖δ‖∞``
entrywise).

**Interval bounds.** The mixed-monotone embedding (:mod:`mondeq.robustness.interval`) needs ``μ∞,Δ(W) < 1`` for
some diagonal ``Δ``, which ℓ2 monotonicity does not give. For a dense ``W`` the best ``Δ`` is known (the Perron
vector of ``W``'s Metzler majorant, :func:`~mondeq.robustness.interval.perron_weights`), so a dense model offers
the interval bound exactly when its current ``W`` has a measure below 1 there; a convolutional one offers none.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..layers import EquilibriumLayer
from ..normalization import Normalization
from ..operators.dense import DenseFrozenOperator
from ..operators.spectral import kernel_spectrum
from ..robustness.interval import abs_linear, embed_dense, enclosed_margins, linear_box
from ..robustness.lipschitz import LipschitzBound, check_norm


def _weight(weight: Tensor, differentiable: bool) -> Tensor:
    return weight if differentiable else weight.detach().double()


def dense_input_norms(
    weight: Tensor, normalization: Normalization, differentiable: bool = False
) -> tuple[Tensor, Tensor]:
    """``(‖UD⁻¹‖₂, a bound of ‖UD⁻¹‖∞→2)`` of a dense input map on channel-first flattened pixels (float64 and
    detached, or ``differentiable`` in ``weight``)."""
    w = _weight(weight, differentiable)
    scaled = w * normalization.inverse_std(w).repeat_interleave(w.shape[1] // normalization.channels)
    l2 = torch.linalg.matrix_norm(scaled, ord=2)
    rows = torch.linalg.vector_norm(scaled.abs().sum(dim=1))
    return l2, torch.minimum(math.sqrt(w.shape[1]) * l2, rows)


def circular_conv_input_norms(
    weight: Tensor, size: tuple[int, int], pixels: int, normalization: Normalization, differentiable: bool = False
) -> tuple[Tensor, Tensor]:
    """``(‖UD⁻¹‖₂, a bound of ‖UD⁻¹‖∞→2)`` of a stride-1 circular convolution on ``size`` images whose input holds
    ``pixels`` perturbed values (zero padding is not perturbed): ``‖·‖₂`` is the largest singular value of the
    per-frequency matrices; every output pixel of channel ``o`` has the row sum ``Σ|K[o]|/std``."""
    w = _weight(weight, differentiable)
    k = w * normalization.inverse_std(w).view(1, -1, 1, 1)
    l2 = torch.linalg.matrix_norm(kernel_spectrum(k, size), ord=2).max()
    rows = math.sqrt(math.prod(size)) * torch.linalg.vector_norm(k.abs().sum(dim=(1, 2, 3)))
    return l2, torch.minimum(math.sqrt(pixels) * l2, rows)


class L2Certified(ABC):
    """The ℓ2 certificates of a monDEQ or OptEq classifier from the norms its parts know: the input map's (with
    the normalisation), the readout's ``‖R‖₂`` (:attr:`readout_scale`), the operator's ``m``, the head's rows."""

    mon: EquilibriumLayer
    head: nn.Linear
    readout_scale: float

    @abstractmethod
    def input_norms(self, normalization: Normalization, differentiable: bool = False) -> tuple[Tensor, Tensor]:
        """``(‖UD⁻¹‖₂, a bound of ‖UD⁻¹‖∞→2)`` of the input map on the pixel scale (float64 and detached, or
        ``differentiable`` in its weight)."""

    def lipschitz(self, norm: str, normalization: Normalization, differentiable: bool = False) -> LipschitzBound:
        """ℓ2 bounds of the logits for pixels in ``norm`` (``differentiable``: the pair bounds keep the gradient
        of the head and the input map, the Lipschitz-margin loss's; ``m`` is a constant of the step)."""
        check_norm(norm)
        l2, inf_to_2 = self.input_norms(normalization, differentiable)
        state = (l2 if norm == "2" else inf_to_2) / cast(float, self.mon.operator.m)  # ℓ2 operators have an m
        c = _weight(self.head.weight, differentiable)
        factor = self.readout_scale * float(state.detach())
        total = float(torch.linalg.matrix_norm(c.detach().double(), ord=2)) * factor
        return LipschitzBound(total, torch.cdist(c, c) * (self.readout_scale * state), float(state.detach()))

    def interval_support(self) -> str | None:
        return (f"no interval bound for {type(self).__name__}: its W is ℓ2-monotone, and the mixed-monotone "
                "embedding needs an ℓ∞ measure below 1, which is only checked for dense W")

    def interval(self, lo: Tensor, hi: Tensor) -> Tensor:
        raise InputError(self.interval_support() or "")


class DenseInterval(ABC):
    """The interval bound of an ℓ2-certified classifier whose ``W`` is dense: offered whenever
    ``minΔ μ∞,Δ(W) < 1`` at its current parameters."""

    mon: EquilibriumLayer
    head: nn.Linear
    readout_terms = 1
    """Inputs summed by each output of the readout (its rounding bound)."""

    @abstractmethod
    def input_box(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """The box of the equilibrium's input ``y`` over inputs in ``[lo, hi]``, rounding included."""

    @abstractmethod
    def readout(self, z: Tensor) -> Tensor:
        """The head's input (linear, non-negative entries)."""

    def _dense_w(self) -> Tensor:
        op = self.mon.operator.frozen()
        if not isinstance(op, DenseFrozenOperator):
            raise InputError(f"no interval bound for {type(self).__name__} with {type(self.mon.operator).__name__}: "
                             "the mixed-monotone embedding of an ℓ2 operator is only checked for dense W")
        return op.weight

    def interval_support(self) -> str | None:
        try:
            embed_dense(self._dense_w())
        except InputError as e:
            return f"{type(self).__name__} at these parameters: {e}"
        return None

    def interval(self, lo: Tensor, hi: Tensor) -> Tensor:
        """Sound lower bounds ``(B, K, K)`` of every logit difference over ``[lo, hi]`` (compute in float64);
        raises :class:`InputError` where :meth:`interval_support` says why not."""
        return enclosed_margins(embed_dense(self._dense_w()), self.mon.activation, *self.input_box(lo, hi),
                                self.readout, self.readout_terms, self.head)


class DenseL2Certified(DenseInterval, L2Certified):
    """An ℓ2-certified classifier with a dense ``W`` and the interval bound where it exists."""


def linear_input_box(linear: nn.Linear, lo: Tensor, hi: Tensor, extra: int = 0) -> tuple[Tensor, Tensor]:
    """The box of ``(Ux + b, 0 ×extra)`` over flattened inputs in ``[lo, hi]``."""
    y_lo, y_hi = linear_box(*abs_linear(linear), lo.flatten(1), hi.flatten(1))
    return F.pad(y_lo, (0, extra)), F.pad(y_hi, (0, extra))
