"""Certified robustness of monDEQ classifiers (SPEC 5; Winston & Kolter 2020, section 5).

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

Projected gradient descent (Madry et al. 2018) through the implicit backward gives the empirical side: an
attack's accuracy is an upper bound of the robust accuracy, a certificate a lower bound.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .data import Splits
from .errors import InputError
from .layers import EquilibriumLayer


def lipschitz_l2(model: nn.Module) -> tuple[float, Tensor]:
    """``(L, Lᵢⱼ)``: ℓ2 bounds of the logits and of every logit difference, in the model's (normalised) input."""
    layers = [m for m in model.modules() if isinstance(m, EquilibriumLayer)]
    needed = ("input_norm", "readout_scale", "head")
    if len(layers) != 1 or not all(hasattr(model, a) for a in needed):
        raise InputError(f"no ℓ2 certificate for {type(model).__name__}")
    factor = model.readout_scale * model.input_norm() / layers[0].operator.m  # type: ignore[operator]
    c = model.head.weight.detach().double()  # type: ignore[union-attr]
    return float(torch.linalg.matrix_norm(c, ord=2)) * factor, torch.cdist(c, c) * factor


def certified_radii(logits: Tensor, pair_bounds: Tensor) -> Tensor:
    """The radius within which each sample's predicted class cannot change: ``minⱼ (yᵢ − yⱼ)/Lᵢⱼ``."""
    pred = logits.argmax(1)
    margins = logits.gather(1, pred[:, None]) - logits
    bounds = pair_bounds.to(logits.device, logits.dtype)[pred]
    ratio = margins / bounds.clamp_min(torch.finfo(logits.dtype).tiny)
    ratio.scatter_(1, pred[:, None], float("inf"))
    return ratio.min(dim=1).values


def pgd(
    model: nn.Module, splits: Splits, images: Tensor, labels: Tensor, eps: float, norm: str, steps: int = 20
) -> Tensor:
    """Adversarial images (pixel scale, in ``[0, 1]``) within ``eps`` of ``images`` in the ℓ2 or ℓ∞ norm,
    by ``steps`` of projected gradient ascent on the cross-entropy (step ``2.5·eps/steps``)."""
    x0 = images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images
    if eps == 0:
        return x0
    step = 2.5 * eps / steps
    delta = torch.zeros_like(x0)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(splits.standardize(x0 + delta)), labels)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if norm == "inf":
                delta = (delta + step * grad.sign()).clamp_(-eps, eps)
            else:
                g = grad.flatten(1)
                delta = delta + step * (g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(delta)
                scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
                delta = delta * scale.view(-1, 1, 1, 1)
            delta = (x0 + delta).clamp_(0.0, 1.0) - x0
    return (x0 + delta).detach()


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


def _linf_certificate(model: nn.Module, std: Sequence[float]) -> tuple[float, Tensor, float]:
    """A NEMON's ℓ∞ bound, its pair bounds and ``1/state`` (a margin error ``c·e`` costs the radius
    ``e/state``), in float64 from the stored parameters, with ``μ`` the measure of the matrix the solver
    applies (the frozen guarantee's, which includes its round-off) where that is larger than the formula's."""
    twin = copy.deepcopy(model).double()
    total, pairs, state = (t.detach() for t in twin.linf_bound(std))
    op = model.mon.operator  # type: ignore[union-attr]
    exact, applied = float(twin.mon.operator.measure().detach()), op.frozen().guarantee.mu  # type: ignore[union-attr]
    widen = (1.0 - exact) / (1.0 - max(applied, exact))
    return float(total) * widen, pairs * widen, 1.0 / (float(state) * widen)


@torch.no_grad()
def certified_radius(
    model: nn.Module, splits: Splits, norm: str = "2", batch_size: int = 400
) -> tuple[Tensor, Tensor, float]:
    """Per test image: whether it is classified correctly and the radius (pixel scale, in ``norm``) within
    which its prediction provably cannot change; and the Lipschitz bound of the logits in that norm."""
    if norm not in ("2", "inf"):
        raise InputError(f"--norm must be 2 or inf, got {norm!r}")
    native = norm == "inf" and hasattr(model, "linf_bound")
    if native:
        lip, pairs, reduce = _linf_certificate(model, splits.info.std)
    else:
        lip, pairs = lipschitz_l2(model)
        scale = 1.0 / min(splits.info.std)
        if norm == "inf":
            scale *= math.sqrt(math.prod(splits.info.input_shape))
        lip, pairs = lip * scale, pairs * scale
    model.eval()
    device = next(model.parameters()).device
    radii, correct = [], []
    for i in range(0, len(splits.test_labels), batch_size):
        x = splits.normalize(splits.test_images[i : i + batch_size].to(device))
        logits = model(x).double()
        correct.append(logits.argmax(1).cpu() == splits.test_labels[i : i + batch_size])
        radius = certified_radii(logits, pairs)
        if native:
            stats = model.mon.last_solve.forward  # type: ignore[union-attr]
            radius = (radius - stats.error_bound.double().to(radius.device) * reduce).clamp_min(0.0)
        radii.append(radius.cpu())
    return torch.cat(correct), torch.cat(radii), lip


@torch.no_grad()
def certify(
    model: nn.Module,
    splits: Splits,
    eps: Sequence[float],
    norm: str = "2",
    batch_size: int = 400,
    attack: bool = False,
    attack_steps: int = 20,
) -> dict:
    """Clean accuracy, the Lipschitz bound and certified accuracy at each ``eps`` on the test split.

    ``eps`` and the bound are on the pixel scale. Logits come from the model's evaluation solver; solve it
    tightly for certificates.
    """
    ok, radius, lip = certified_radius(model, splits, norm, batch_size)
    device = next(model.parameters()).device
    results = [{"eps": float(e), "certified_acc": float((ok & (radius > e)).double().mean())} for e in eps]
    if attack:
        for row in results:
            survived = 0
            for i in range(0, len(splits.test_labels), batch_size):
                labels = splits.test_labels[i : i + batch_size].to(device)
                with torch.enable_grad():
                    adv = pgd(model, splits, splits.test_images[i : i + batch_size].to(device), labels,
                              row["eps"], norm, attack_steps)
                survived += int((model(splits.standardize(adv)).argmax(1) == labels).sum())
            row["pgd_acc"] = survived / len(ok)
    return {"norm": norm, "n": len(ok), "clean_acc": float(ok.double().mean()), "lipschitz": lip,
            "results": results}
