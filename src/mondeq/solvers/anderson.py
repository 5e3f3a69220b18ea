"""Safeguarded Anderson acceleration of any splitting method (SPEC 2).

Anderson (type II) extrapolates the state ``x`` of the wrapped method from its last ``memory`` pairs
``(xᵢ, gᵢ = T(xᵢ) − xᵢ)``: ``x̃ = Σ cᵢ (xᵢ + β gᵢ)`` with ``c`` minimising ``‖Σ cᵢ gᵢ‖`` subject to
``Σ cᵢ = 1`` (a small regularised least-squares problem per sample). The fixed point is unchanged.

The guarantee of the wrapped method is kept by the safeguard of Zhang, O'Donoghue & Boyd (2020,
"Globally convergent type-I Anderson acceleration for nonsmooth fixed-point iterations"), applied per
sample: an extrapolated point is kept only if its own residual satisfies
``‖g(x̃)‖ ≤ D‖g(x₀)‖(n + 1)^−(1+ε)`` (``n`` = extrapolated points kept so far); otherwise the sample
falls back to the plain step from its last kept point. A least-squares system that is singular or gives
coefficients larger than ``max_coefficient`` (ill-conditioned) is not used at all: the plain step is taken.
No check synchronises with the device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..activations import Activation
from ..errors import InputError
from ..operators.base import FrozenOperator
from .base import Iteration, Solver, Splitting

_SAFEGUARD_D = 1e6
_SAFEGUARD_EPS = 1e-6


class _AndersonIteration(Iteration):
    def __init__(self, base: Iteration, cfg: Anderson) -> None:
        self.base, self.cfg = base, cfg
        self.x0, self.alpha = base.x0, base.alpha
        batch, size = self.x0.shape[0], self.x0[0].numel()
        self.xs = self.x0.new_zeros(batch, cfg.memory, size)
        self.gs = self.x0.new_zeros(batch, cfg.memory, size)
        self.count = 0
        self.g0: Tensor | None = None
        self.kept = torch.zeros(batch, dtype=self.x0.dtype, device=self.x0.device)
        self.candidate = torch.zeros(batch, dtype=torch.bool, device=self.x0.device)
        self.fallback = self.x0

    def step(self, x: Tensor, check: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        f, z, v = self.base.step(x, check)
        xf, ff = x.flatten(1), f.flatten(1)
        g = ff - xf
        gnorm = torch.linalg.vector_norm(g, dim=1)
        if self.g0 is None:
            self.g0 = gnorm
            ok = torch.ones_like(self.candidate)
        else:
            bound = _SAFEGUARD_D * self.g0 * (self.kept + 1.0).pow(-(1.0 + _SAFEGUARD_EPS))
            ok = ~self.candidate | (gnorm <= bound)
            self.kept += (self.candidate & ok).to(self.kept.dtype)
        shape = (-1,) + (1,) * (x.dim() - 1)
        fallback = torch.where(ok.view(shape), f, self.fallback)

        slot = self.count % self.cfg.memory
        self.xs[:, slot] = xf
        self.gs[:, slot] = g
        self.count += 1
        k = min(self.count, self.cfg.memory)
        xs, gs = self.xs[:, :k], self.gs[:, :k]
        g64 = gs.to(torch.float64)
        gram = g64 @ g64.transpose(1, 2)
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-300)
        eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
        gram = gram + (self.cfg.regularization * scale)[:, None, None] * eye
        ones = torch.ones(gram.shape[0], k, 1, dtype=gram.dtype, device=gram.device)
        sol, info = torch.linalg.solve_ex(gram, ones)
        coef = sol[..., 0] / sol[..., 0].sum(dim=1, keepdim=True)
        good = (info == 0) & torch.isfinite(coef).all(dim=1)
        good &= coef.abs().sum(dim=1) <= self.cfg.max_coefficient
        coef = torch.nan_to_num(coef, nan=0.0, posinf=0.0, neginf=0.0).to(x.dtype)
        extrapolated = (coef.unsqueeze(1) @ torch.add(xs, gs, alpha=self.cfg.mixing)).view_as(x)

        use = ok & good
        self.candidate, self.fallback = use, fallback
        return torch.where(use.view(shape), extrapolated, fallback), z, v


@dataclass(frozen=True)
class Anderson(Solver):
    """Anderson acceleration wrapped around a splitting method; the stopping options are the base's.

    Args:
        base: the method to accelerate (its ``tol``, ``max_iter``, ``check_every``, ``strict`` apply).
        memory: number of past iterates used.
        regularization: Tikhonov term of the least-squares system, relative to its scale.
        mixing: ``β`` in ``x̃ = Σ cᵢ(xᵢ + β gᵢ)``.
        max_coefficient: systems giving ``Σ|cᵢ|`` above this are treated as ill-conditioned.
    """

    base: Splitting
    memory: int = 5
    regularization: float = 1e-8
    mixing: float = 1.0
    max_coefficient: float = 1e3

    def __post_init__(self) -> None:
        if not isinstance(self.base, Splitting):
            raise InputError(f"Anderson wraps a splitting method, got {type(self.base).__name__}")
        if self.memory < 1:
            raise InputError(f"Anderson memory must be ≥ 1, got {self.memory}")
        if not 0.0 < self.mixing <= 1.0:
            raise InputError(f"Anderson mixing must be in (0, 1], got {self.mixing}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"anderson({self.base.name})"

    tol = property(lambda self: self.base.tol)  # type: ignore[assignment]
    max_iter = property(lambda self: self.base.max_iter)  # type: ignore[assignment]
    check_every = property(lambda self: self.base.check_every)  # type: ignore[assignment]
    strict = property(lambda self: self.base.strict)  # type: ignore[assignment]

    def iteration(self, op: FrozenOperator, act: Activation, y: Tensor) -> Iteration:
        return _AndersonIteration(self.base.iteration(op, act, y), self)

    def with_options(self, **changes: Any) -> Anderson:
        own = {f.name for f in dataclasses.fields(self)}
        mine = {k: v for k, v in changes.items() if k in own}
        base = self.base.with_options(**{k: v for k, v in changes.items() if k not in own})
        return dataclasses.replace(self, **{**mine, "base": mine.get("base", base)})
