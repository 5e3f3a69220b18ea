"""Projected gradient descent (Madry et al. 2018) through the implicit backward: the empirical side of
robustness. An attack's accuracy is an upper bound of the robust accuracy, a certificate a lower bound.

Each step's forward solve starts from the previous step's equilibrium (:attr:`EquilibriumLayer.warm_start`):
the equilibrium is the same, the solve shorter, as the input moves little between steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..layers import EquilibriumLayer


@contextlib.contextmanager
def warm_started(model: nn.Module) -> Iterator[None]:
    """Within the block, every equilibrium layer of ``model`` starts each solve from its last equilibrium."""
    layers = [m for m in model.modules() if isinstance(m, EquilibriumLayer)]
    saved = [layer.warm_start for layer in layers]
    for layer in layers:
        layer.warm_start = True
    try:
        yield
    finally:
        for layer, was in zip(layers, saved, strict=True):
            layer.warm_start, layer._last = was, None


def _project(delta: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "inf":
        return delta.clamp(-eps, eps)
    scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
    return delta * scale.view(-1, *[1] * (delta.dim() - 1))


def _random_start(x0: Tensor, eps: float, norm: str, gen: torch.Generator) -> Tensor:
    if norm == "inf":
        u = torch.rand(x0.shape, generator=gen, dtype=x0.dtype)
        return ((2 * u - 1) * eps).to(x0.device)
    d = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (d.dim() - 1))
    r = torch.rand(x0.shape[0], generator=gen, dtype=x0.dtype) ** (1.0 / x0[0].numel())
    return (d * (eps * r).view(-1, *[1] * (d.dim() - 1))).to(x0.device)


def pgd(
    model: nn.Module,
    normalize: Callable[[Tensor], Tensor],
    images: Tensor,
    labels: Tensor,
    eps: float,
    norm: str,
    steps: int = 20,
    restarts: int = 1,
    seed: int = 0,
) -> Tensor:
    """Adversarial images (pixel scale, in ``[0, 1]``) within ``eps`` of ``images`` in the ℓ2 or ℓ∞ norm.

    ``steps`` of projected gradient ascent on the cross-entropy (step ``2.5·eps/steps``, signed for ℓ∞,
    normalised for ℓ2), from the clean image and then from ``restarts − 1`` random points of the ball; each
    sample keeps the first point found that is misclassified, else the last. ``normalize`` maps pixels to the
    model's input (a :class:`~mondeq.normalization.Normalization`).
    """
    if norm not in ("2", "inf"):
        raise InputError(f"the attack norm must be 2 or inf, got {norm!r}")
    if restarts < 1 or steps < 1:
        raise InputError(f"an attack needs steps ≥ 1 and restarts ≥ 1, got {steps}, {restarts}")
    x0 = images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images
    if eps == 0:
        return x0
    step = 2.5 * eps / steps
    gen = torch.Generator().manual_seed(seed)
    best = x0.clone()
    found = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
    with warm_started(model), torch.enable_grad():
        for r in range(restarts):
            delta = torch.zeros_like(x0) if r == 0 else _random_start(x0, eps, norm, gen)
            delta = (x0 + delta).clamp(0.0, 1.0) - x0
            for _ in range(steps):
                delta.requires_grad_(True)
                loss = torch.nn.functional.cross_entropy(model(normalize(x0 + delta)), labels)
                (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    if norm == "inf":
                        delta = delta + step * grad.sign()
                    else:
                        g = grad.flatten(1)
                        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
                        delta = delta + step * g.view_as(delta)
                    delta = (x0 + _project(delta, eps, norm)).clamp_(0.0, 1.0) - x0
            with torch.no_grad():
                adv = x0 + delta
                wrong = model(normalize(adv)).argmax(1) != labels
                take = wrong & ~found if r + 1 < restarts else ~found
                best[take] = adv[take]
                found |= wrong
    return best.detach()
