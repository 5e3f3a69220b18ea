"""Lipschitz bounds and certified radii of equilibrium classifiers (SPEC 5; Winston & Kolter 2020, section 5).

With ``I − W`` ``m``-strongly monotone and ``σ`` non-expansive, ``‖z*(x₁) − z*(x₂)‖₂ ≤ ‖U‖₂/m · ‖x₁ − x₂‖₂``;
the logits ``y = C·R(z*) + c`` (``R`` the readout: identity, pooling or a tier) are then
``‖C‖₂‖R‖₂‖U‖₂/m``-Lipschitz, and the difference ``yᵢ − yⱼ`` is ``‖Cᵢ − Cⱼ‖₂‖R‖₂‖U‖₂/m``-Lipschitz. A
prediction ``i`` with margin ``yᵢ − yⱼ`` cannot change within the radius ``minⱼ (yᵢ − yⱼ)/Lᵢⱼ``. Bounds are
stated for inputs on the pixel scale ``[0, 1]`` (the per-channel normalisation divides by ``std``). For the
ℓ∞ norm of a monDEQ the ℓ2 bound is used through ``‖δ‖₂ ≤ √d‖δ‖∞`` (valid, loose).

A NEMON has a native ℓ∞ bound (SPEC 4.4, :mod:`mondeq.models.nemon`), and its certificate accounts for the
solve: the logits come from a point ``z`` with ``‖Δ(z − z*)‖∞ ≤ e`` (the solve's a-posteriori bound), so each
pair margin of the exact equilibrium is at least the computed one less ``‖(Cₖ − Cₗ)RΔ⁻¹‖₁·e``, and the radius
is reduced accordingly (a sample whose bound exceeds its margin gets radius 0).

"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..layers import EquilibriumLayer


def lipschitz_l2(model: nn.Module, differentiable: bool = False) -> tuple[float, Tensor]:
    """``(L, Lᵢⱼ)``: ℓ2 bounds of the logits and of every logit difference, in the model's (normalised) input;
    ``differentiable``: the pair bounds keep the head's gradient (the Lipschitz-margin loss)."""
    layers = [m for m in model.modules() if isinstance(m, EquilibriumLayer)]
    needed = ("input_norm", "readout_scale", "head")
    if len(layers) != 1 or not all(hasattr(model, a) for a in needed):
        raise InputError(f"no ℓ2 certificate for {type(model).__name__}")
    factor = model.readout_scale * model.input_norm() / layers[0].operator.m  # type: ignore[operator]
    c = model.head.weight  # type: ignore[union-attr]
    c = c if differentiable else c.detach().double()
    return float(torch.linalg.matrix_norm(c.detach().double(), ord=2)) * factor, torch.cdist(c, c) * factor


def certified_radii(logits: Tensor, pair_bounds: Tensor) -> Tensor:
    """The radius within which each sample's predicted class cannot change: ``minⱼ (yᵢ − yⱼ)/Lᵢⱼ``."""
    pred = logits.argmax(1)
    margins = logits.gather(1, pred[:, None]) - logits
    bounds = pair_bounds.to(logits.device, logits.dtype)[pred]
    ratio = margins / bounds.clamp_min(torch.finfo(logits.dtype).tiny)
    ratio.scatter_(1, pred[:, None], float("inf"))
    return ratio.min(dim=1).values


def linf_certificate(model: nn.Module, std: Sequence[float]) -> tuple[float, Tensor, float]:
    """A NEMON's ℓ∞ bound, its pair bounds and ``1/state`` (a margin error ``c·e`` costs the radius
    ``e/state``), in float64 from the stored parameters, with ``μ`` the measure of the matrix the solver
    applies (the frozen guarantee's, which includes its round-off) where that is larger than the formula's."""
    twin = copy.deepcopy(model).double()
    total, pairs, state = (t.detach() for t in twin.linf_bound(std))
    op = model.mon.operator  # type: ignore[union-attr]
    exact, applied = float(twin.mon.operator.measure().detach()), op.frozen().guarantee.mu  # type: ignore[union-attr]
    widen = (1.0 - exact) / (1.0 - max(applied, exact))
    return float(total) * widen, pairs * widen, 1.0 / (float(state) * widen)


