"""Fully connected monotone operator (SPEC 1.2, 4.1; Winston & Kolter 2020, section 4).

``W = (1 − m)I − AᵀA + B − Bᵀ``, so ``sym(I − W) = mI + AᵀA ⪰ mI`` for every ``A, B``. With
``normalized=True`` the paper's normalised form ``W = (1 − m)I − g·AᵀA/‖A‖²_F + h·(B − Bᵀ)/‖B‖_F`` with
learnable scalars ``g = softplus(ĝ) > 0`` and ``h`` (its code omits it); ``g`` is kept positive so that
the guarantee holds for every parameter value.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import FrozenOperator, MonotoneOperator, Resolvent
from .guarantees import Guarantee, StronglyMonotone


class DenseResolvent(Resolvent):
    """``(I + α(I − W))⁻¹`` as an explicit matrix, inverted once.

    The matrix is provably well conditioned: its singular values lie in ``[1 + αm, 1 + αL]``, so an
    explicit inverse loses nothing against a triangular solve and is applied as one matrix product. It is
    inverted in float64 and rounded once to the working precision, so each entry is the float32 (say)
    nearest the float64 inverse.
    """

    def __init__(self, weight: Tensor, alpha: float) -> None:
        super().__init__(alpha)
        w = weight.to(torch.float64)
        eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
        self.matrix = torch.linalg.inv((1.0 + alpha) * eye - alpha * w).to(weight.dtype)
        self._matrix_t = self.matrix.T

    def apply(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        return v @ self._matrix_t if add is None else torch.addmm(add, v, self._matrix_t)

    def apply_T(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        return v @ self.matrix if add is None else torch.addmm(add, v, self.matrix)


def _norm_I_minus_W(weight: Tensor) -> float:
    """``‖I − W‖₂`` by an SVD in float64."""
    w = weight.to(torch.float64)
    eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
    return float(torch.linalg.matrix_norm(eye - w, ord=2)) * (1.0 + 1e-12)


class DenseFrozenOperator(FrozenOperator):
    """A dense ``W`` (``n × n``) acting on batches of shape ``(batch, n)``.

    Args:
        weight: the matrix.
        m: ``I − W`` is ``m``-strongly monotone (ℓ2, with ``‖I − W‖₂`` computed from the matrix on first use);
            or give the ``guarantee`` itself instead.
    """

    def __init__(self, weight: Tensor, m: float | None = None, *, guarantee: Guarantee | None = None) -> None:
        if (m is None) == (guarantee is None):
            raise InputError("DenseFrozenOperator takes either m or a guarantee")
        if guarantee is None:
            guarantee = StronglyMonotone(float(cast(float, m)), functools.partial(_norm_I_minus_W, weight))  # no cycle
        super().__init__(guarantee, (weight.shape[0],), weight.dtype, weight.device)
        self.weight = weight
        self._weight_t = weight.T

    def W(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        return z @ self._weight_t if add is None else torch.addmm(add, z, self._weight_t)

    def WT(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        return z @ self.weight if add is None else torch.addmm(add, z, self.weight)

    def _build_resolvent(self, alpha: float) -> Resolvent:
        return DenseResolvent(self.weight, alpha)


class DenseMonotone(MonotoneOperator):
    """Trainable ``W = (1 − m)I − AᵀA + B − Bᵀ`` on ``ℝⁿ``.

    Args:
        n: hidden width.
        m: strong monotonicity of ``I − W`` (the paper uses 1).
        normalized: use the normalised form with learnable scalars ``g, h``.
    """

    def __init__(
        self,
        n: int,
        m: float = 1.0,
        *,
        normalized: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(m)
        if n < 1:
            raise InputError(f"the hidden width must be positive, got {n}")
        self.n = int(n)
        self.normalized = bool(normalized)
        bound = 1.0 / math.sqrt(n)
        kw: dict[str, Any] = {"dtype": dtype, "device": device}
        self.A = nn.Parameter(torch.empty(n, n, **kw).uniform_(-bound, bound))
        self.B = nn.Parameter(torch.empty(n, n, **kw).uniform_(-bound, bound))
        if normalized:  # g = softplus(ĝ) starts at 1
            self.g = nn.Parameter(torch.full((), math.log(math.e - 1.0), **kw))
            self.h = nn.Parameter(torch.ones((), **kw))

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,)

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.A, self.B, self.g, self.h) if self.normalized else (self.A, self.B)

    def weight(self, tensors: Sequence[Tensor] | None = None) -> Tensor:
        """The matrix ``W`` (differentiable in ``tensors``, the current parameters by default)."""
        a, b, *gh = self.tensors() if tensors is None else tensors
        ata, skew = a.T @ a, b - b.T
        if gh:
            g, h = gh
            tiny = torch.finfo(a.dtype).tiny
            ata = torch.nn.functional.softplus(g) * ata / a.square().sum().clamp_min(tiny)
            skew = h * skew / b.square().sum().clamp_min(tiny).sqrt()
        eye = torch.eye(self.n, dtype=a.dtype, device=a.device)
        return (1.0 - self.m) * eye - ata + skew

    def apply_W(self, tensors: Sequence[Tensor], z: Tensor) -> Tensor:
        return z @ self.weight(tensors).T

    def vjp(
        self, tensors: Sequence[Tensor], z: Tensor, u: Tensor, need: Sequence[bool]
    ) -> list[Tensor | None]:
        """Closed form for the plain parameterization: with ``G = Σ u zᵀ``, ``∂/∂A = −A(G + Gᵀ)`` and
        ``∂/∂B = G − Gᵀ``."""
        if self.normalized:
            return super().vjp(tensors, z, u, need)
        a = tensors[0]
        g = u.T @ z
        return [-(a @ (g + g.T)) if need[0] else None, g - g.T if need[1] else None]

    def build(self, tensors: Sequence[Tensor]) -> DenseFrozenOperator:
        return DenseFrozenOperator(self.weight(tensors), self.m)

    def extra_repr(self) -> str:
        return f"n={self.n}, m={self.m}, normalized={self.normalized}"
