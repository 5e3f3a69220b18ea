"""The certificate protocol of equilibrium classifiers and their certified radii (SPEC 5).

A classifier that can be certified answers, from what each of its parts knows of its norms (input map,
operator, readout, head; see :mod:`mondeq.models.certificates` and :mod:`mondeq.models.nemon`):

* ``lipschitz(norm, normalization)`` → :class:`LipschitzBound`: bounds of the logits and of every logit
  difference in the ℓ2 or ℓ∞ norm of the pixels, the normalisation composed into the input map per channel;
* ``interval_support()`` → ``None`` where an interval bound exists, else why not, and ``interval(lo, hi)`` →
  sound lower bounds of every logit difference over an input box (:mod:`mondeq.robustness.interval`).

A prediction ``i`` with margins ``yᵢ − yⱼ`` cannot change within ``minⱼ (yᵢ − yⱼ)/Lᵢⱼ``
(:func:`certified_radii`). The logits come from a solve with a-posteriori error ``e`` in the norm of the state
bound ``S``: the pair bound is ``Lᵢⱼ = Pᵢⱼ·S`` with ``Pᵢⱼ`` the readout-and-head part, the margin of the exact
equilibrium is at least the computed one less ``Pᵢⱼ·e``, so the radius is reduced by ``e/S``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import InputError
from ..normalization import Normalization

NORMS = ("2", "inf")
"""The certificate norms of the input: ``"2"`` (ℓ2) and ``"inf"`` (ℓ∞)."""


def check_norm(norm: str) -> None:
    """Refuse a certificate norm other than ``"2"`` and ``"inf"`` in one line."""
    if norm not in NORMS:
        raise InputError(f"the certificate norm must be 2 or inf, got {norm!r}")


class LipschitzBound(NamedTuple):
    """Bounds in one input norm, on the pixel scale."""

    logits: float
    """``L``: ``‖y(x₁) − y(x₂)‖ ≤ L‖x₁ − x₂‖`` (ℓ2 logits for the ℓ2 families, ℓ∞ for NEMON)."""
    pairs: Tensor
    """``(K, K)``: ``Lₖₗ`` of each logit difference ``yₖ − yₗ``."""
    state: float
    """``S``: the bound of the equilibrium in the norm of its solve's error bound (a solve error ``e`` costs the
    radius ``e/S``)."""


@runtime_checkable
class Certifiable(Protocol):
    """What :func:`~mondeq.robustness.certify` asks of a classifier."""

    def lipschitz(self, norm: str, normalization: Normalization, differentiable: bool = False) -> LipschitzBound:
        """Bounds in the ``norm`` (``"2"`` or ``"inf"``) of the pixels; ``differentiable``: the pair bounds
        keep the gradient of the parameters they are differentiable in (certified training)."""
        ...

    def interval_support(self) -> str | None:
        """``None`` where :meth:`interval` gives bounds, else why it cannot (one line)."""
        ...

    def interval(self, lo: Tensor, hi: Tensor) -> Tensor:
        """Sound lower bounds ``(B, K, K)`` of every ``yₖ − yₗ`` over inputs in ``[lo, hi]`` (model scale)."""
        ...


def certified_radii(logits: Tensor, pair_bounds: Tensor) -> Tensor:
    """The radius within which each sample's predicted class cannot change: ``minⱼ (yᵢ − yⱼ)/Lᵢⱼ``."""
    pred = logits.argmax(1)
    margins = logits.gather(1, pred[:, None]) - logits
    bounds = pair_bounds.to(logits.device, logits.dtype)[pred]
    ratio = margins / bounds.clamp_min(torch.finfo(logits.dtype).tiny)
    ratio.scatter_(1, pred[:, None], float("inf"))
    return ratio.min(dim=1).values
