"""Classifiers a user composes around one equilibrium layer, with the certificates of its family (SPEC 5).

``x ↦ C·R(z*) + c`` with ``z* = σ(Wz* + U·F(x))``: ``F`` a chain of feature parts, ``U`` the layer's input map,
``R`` a linear readout with non-negative entries (``Flatten``, ``AvgPool2d``) and ``C`` a linear head. Every part
knows its norms (:mod:`mondeq.models.parts`), so :func:`compose` returns a classifier that answers the
certificate protocol (:class:`~mondeq.robustness.lipschitz.Certifiable`) of its layer's family:

* **ℓ2 (monDEQ, OptEq; I − W m-strongly monotone):** ``‖z*(x₁) − z*(x₂)‖₂ ≤ ‖U‖₂ Πᵢ Lᵢ / m · ‖x₁ − x₂‖``
  (``‖·‖∞→2`` for the first affine part when the pixels are measured in ℓ∞) and the pair bound of ``yₖ − yₗ``
  is ``‖(Cₖ − Cₗ)R‖₂`` times that, exactly (``R``'s transpose applied to the head's rows). Interval bounds
  where the layer's ``W`` is dense and ``minΔ μ∞,Δ(W) < 1``.
* **ℓ∞ (NEMON):** the state bound in ``‖Δ·‖∞`` is ``‖ΔU‖∞ Πᵢ Lᵢ / (1 − μ∞,Δ(W))`` and the pair bound
  ``‖(Cₖ − Cₗ)RΔ⁻¹‖₁`` times that (the argument of :mod:`mondeq.models.nemon`, with ``U·F`` in place of
  ``U``: ``‖ΔUF(x₁) − ΔUF(x₂)‖∞ ≤ ‖ΔU‖∞‖F(x₁) − F(x₂)‖∞``); interval bounds through the features and the
  mixed-monotone embedding, and the interval-bound loss of certified training.

The normalisation is folded into the first affine part when only layout parts precede it (else its largest
``1/std`` multiplies the bound).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..layers import EquilibriumLayer
from ..normalization import Normalization
from ..operators.guarantees import LinfContractive
from ..robustness.interval import enclosed_margins, head_margins, interval_equilibrium
from ..robustness.lipschitz import LipschitzBound, check_norm
from ..solvers.base import check_shape
from .certificates import DenseInterval
from .nemon import logit_bound, nemon_lipschitz
from .parts import (
    AFFINE,
    LAYOUT,
    affine_inf_to_2,
    affine_l2,
    affine_rows,
    check_bn_eval,
    check_part,
    lipschitz_constant,
    part_box,
)

READOUT = (nn.Flatten, nn.Identity, nn.AvgPool2d)


class _Chain:
    """The parts of ``U·F`` with the input scaling of each affine one (the normalisation folded into the first
    when only layout parts precede it, else its largest ``1/std`` a prefactor) and their input shapes."""

    def __init__(self, model: _Composed, normalization: Normalization) -> None:
        x = torch.zeros(1, *model.input_shape, dtype=model.head.weight.dtype, device=model.head.weight.device)
        inv = normalization.inverse_std(x)
        scale: Tensor | None = (inv.view(-1, *[1] * (x.dim() - 2)).expand(x.shape[1:]) if x.dim() > 2
                                else inv.repeat_interleave(x.shape[1] // inv.numel()))
        self.prefactor = torch.ones((), dtype=x.dtype, device=x.device)
        self.folded = True
        self.pixels = math.prod(model.input_shape)
        self.entries: list[tuple[nn.Module, Tensor | None, tuple[int, ...]]] = []
        for part in [*model.features, model.mon.input_map]:
            shape = tuple(x.shape[1:])
            if scale is not None and isinstance(part, LAYOUT):
                scale = part(scale[None])[0]
                self.entries.append((part, None, shape))
            elif isinstance(part, AFFINE):
                s = scale if scale is not None else torch.ones(shape, dtype=x.dtype, device=x.device)
                self.entries.append((part, s, shape))
                scale = None
            else:
                if scale is not None:
                    self.prefactor, self.folded, scale = scale.max(), False, None
                self.entries.append((part, None, shape))
            if not isinstance(part, (nn.BatchNorm1d, nn.BatchNorm2d)):  # shape-preserving; no statistics update
                with torch.no_grad():
                    x = part(x)

    def product(self, norm: str, skip_last: bool = False) -> Tensor:
        """``Πᵢ Lᵢ`` of the parts in the ``norm`` (``"2"``, ``"inf"``, or ``"inf→2"``: ``‖·‖∞→2`` of the first
        affine part, ℓ2 after it), the prefactor included; ``skip_last``: without the input map."""
        total, first = self.prefactor, True
        if norm == "inf→2" and not self.folded:
            total = total * math.sqrt(self.pixels)  # ‖δ‖₂ ≤ √d‖δ‖∞ before the first part
        for part, scale, shape in self.entries[:-1] if skip_last else self.entries:
            if scale is None:
                total = total * lipschitz_constant(part, "inf" if norm == "inf" else "2")
            elif norm == "inf":
                total = total * affine_rows(part, scale).max()
            elif norm == "inf→2" and first and self.folded:
                total = total * affine_inf_to_2(part, scale, shape)
            else:
                total = total * affine_l2(part, scale, shape)
            first = first and scale is None
        return total

    def input_rows(self) -> Tensor:
        """The row sums of ``|U|`` (per hidden unit or channel), scaled when ``U`` is the first affine part."""
        part, scale, _ = self.entries[-1]
        assert scale is not None
        return affine_rows(part, scale)


class _Composed(nn.Module):
    """What both families share: the parts, the forward pass, the readout's transpose and the input box."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        features: Sequence[nn.Module],
        layer: EquilibriumLayer,
        head: nn.Linear,
        readout: Sequence[nn.Module] = (nn.Flatten(),),
    ) -> None:
        super().__init__()
        for part in [*features, *readout]:
            check_part(part)
        if not isinstance(layer.input_map, (nn.Linear, nn.Conv2d)):
            raise InputError(f"the equilibrium layer's input map must be a Linear or Conv2d, not "
                             f"{type(layer.input_map).__name__}")
        check_part(layer.input_map)
        bad = [type(p).__name__ for p in readout if not isinstance(p, READOUT)]
        if bad or not isinstance(head, nn.Linear):
            raise InputError(f"the readout must be Flatten or AvgPool2d parts and the head a Linear (got {bad}, "
                             f"{type(head).__name__})")
        self.input_shape = tuple(input_shape)
        self.features = nn.Sequential(*features)
        self.mon = layer
        self.readout_parts = nn.Sequential(*readout)
        self.head = head
        self.readout_terms = math.prod(math.prod((p.kernel_size,) * 2 if isinstance(p.kernel_size, int)
                                                 else p.kernel_size)
                                       for p in readout if isinstance(p, nn.AvgPool2d))

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, self.input_shape, "input")
        return self.head(self.readout(self.mon(self.features(x))))

    def readout(self, z: Tensor) -> Tensor:
        """``R(z)``, the head's input."""
        return self.readout_parts(z)

    def head_rows(self) -> Tensor:
        """``C·R`` as ``(K, *z.shape)`` (``R``'s transpose applied to the head's rows; differentiable in ``C``)."""
        c = self.head.weight
        with torch.enable_grad():
            z = torch.zeros(c.shape[0], *self.mon.operator.shape, dtype=c.dtype, device=c.device,
                            requires_grad=True)
            (rows,) = torch.autograd.grad(self.readout(z), z, c, create_graph=c.requires_grad)
        return rows

    def input_box(self, lo: Tensor, hi: Tensor, certificate: bool = True) -> tuple[Tensor, Tensor]:
        """The box of the equilibrium's input ``U·F(x) + b`` over inputs in ``[lo, hi]``, rounding included, for
        the evaluation map of each batch norm (refused in training mode for a ``certificate``)."""
        parts = [*self.features, self.mon.input_map]
        if certificate:
            check_bn_eval(parts)
        for part in parts:
            lo, hi = part_box(part, lo, hi)
        return lo, hi


class ComposedL2(_Composed, DenseInterval):
    """A composed classifier around an ℓ2 (monDEQ or OptEq) equilibrium layer; see :func:`compose`."""

    def lipschitz(self, norm: str, normalization: Normalization, differentiable: bool = False) -> LipschitzBound:
        """ℓ2 bounds of the logits for pixels in ``norm`` (float64 from the stored parameters, or
        ``differentiable`` in every part; ``m`` is a constant of the step)."""
        check_norm(norm)
        model = self if differentiable else copy.deepcopy(self).double()
        if not differentiable:  # a loss may bound the evaluation map while training
            check_bn_eval(list(model.features))
        m = float(self.mon.operator.m)  # type: ignore[union-attr,arg-type]
        if not m > 0:
            raise InputError(f"no ℓ2 bound: I − W is not strongly monotone (m = {m})")
        with torch.set_grad_enabled(differentiable):
            state = _Chain(model, normalization).product("2" if norm == "2" else "inf→2") / m
            rows = model.head_rows().flatten(1)
            total = torch.linalg.matrix_norm(rows.detach(), ord=2) * state.detach()
            pairs = torch.cdist(rows, rows) * state
        return LipschitzBound(float(total), pairs if differentiable else pairs.detach(), float(state.detach()))


class ComposedNemon(_Composed):
    """A composed classifier around a NEMON (ℓ∞-contractive) equilibrium layer; see :func:`compose`."""

    def linf_bound(self, normalization: Normalization, p: float = math.inf) -> tuple[Tensor, Tensor, Tensor]:
        """``(L, Lₖₗ, S)``: ℓ∞ bounds of the logits, of every logit difference and of ``z*`` in ``‖Δ·‖∞``, on the
        pixel scale, differentiable (a finite ``p``: ℓp norms of the row sums in place of their maxima, as in
        :meth:`NemonFC.linf_bound <mondeq.models.NemonFC.linf_bound>`), for each batch norm's evaluation map."""
        op = self.mon.operator
        weights = torch.exp(op.delta)  # type: ignore[arg-type]
        chain = _Chain(self, normalization)
        rows = torch.linalg.vector_norm(weights * chain.input_rows(), ord=p)
        state = rows * chain.product("inf", skip_last=True) / (1.0 - op.measure())  # type: ignore[operator]
        view = weights.view(-1, *[1] * (len(op.shape) - 1))
        scaled = (self.head_rows() / view).flatten(1)
        pairs = (scaled[:, None, :] - scaled[None, :, :]).abs().sum(dim=2) * state
        return logit_bound(scaled, state, p), pairs, state

    def linf_lipschitz(self, normalization: Normalization, p: float = math.inf) -> Tensor:
        """The ℓ∞ bound ``L`` of the logits alone (the regulariser's)."""
        return self.linf_bound(normalization, p)[0]

    def lipschitz(self, norm: str, normalization: Normalization, differentiable: bool = False) -> LipschitzBound:
        """See :func:`~mondeq.models.nemon.nemon_lipschitz`."""
        if not differentiable:
            check_bn_eval(list(self.features))
        return nemon_lipschitz(self, norm, normalization, differentiable)

    def interval_support(self) -> str | None:
        return None

    def interval(self, lo: Tensor, hi: Tensor) -> Tensor:
        """Sound lower bounds ``(B, K, K)`` of every logit difference over ``[lo, hi]`` (compute in float64)."""
        return enclosed_margins(self.mon.operator, self.mon.activation, *self.input_box(lo, hi), self.readout,
                                self.readout_terms, self.head)

    def interval_training(self, lo: Tensor, hi: Tensor, labels: Tensor) -> Tensor:
        """Upper bounds of ``yₖ − y_label`` over ``[lo, hi]``, differentiable (the interval-bound loss's)."""
        z_lo, z_hi = interval_equilibrium(self.mon, *self.input_box(lo, hi, certificate=False))
        return -head_margins(self.head, self.readout(z_lo), self.readout(z_hi), labels)


def compose(
    input_shape: tuple[int, ...],
    features: Sequence[nn.Module],
    layer: EquilibriumLayer,
    head: nn.Linear,
    readout: Sequence[nn.Module] = (nn.Flatten(),),
) -> ComposedL2 | ComposedNemon:
    """``head(readout(layer(features(x))))`` for inputs of ``input_shape``, certified by its layer's family
    (:class:`ComposedNemon` for an ℓ∞-contractive operator, else :class:`ComposedL2`). Parts whose norms are not
    known (:func:`~mondeq.models.parts.check_part`) are refused in one line.

    Example: ``compose((1, 28, 28), [nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.Flatten()],
    EquilibriumLayer(nn.Linear(8 * 13 * 13, 64), DenseNemon(64)), nn.Linear(64, 10))``.
    """
    cls = ComposedNemon if issubclass(layer.operator.guarantee_type, LinfContractive) else ComposedL2
    return cls(input_shape, features, layer, head, readout)
