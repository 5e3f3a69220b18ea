"""Safeguarded Anderson acceleration of any splitting method (SPEC 2).

Anderson (type II) extrapolates the state ``x`` of the wrapped method from its last ``memory`` pairs
``(xᵢ, gᵢ = T(xᵢ) − xᵢ)``: ``x̃ = Σ cᵢ (xᵢ + β gᵢ)`` with ``c`` minimising ``‖Σ cᵢ gᵢ‖`` subject to
``Σ cᵢ = 1`` (a small regularised least-squares problem per sample). The fixed point is unchanged.

The safeguard acts per sample (Zhang, O'Donoghue & Boyd 2020, "Globally convergent type-I Anderson
acceleration for nonsmooth fixed-point iterations"). An extrapolated point is a candidate; it is kept only if
its own residual is no larger than that of the kept point it was made from, ``‖g(x̃)‖ ≤ ‖g(x_kept)‖``, and
below the summable bound ``D‖g(x₀)‖(n + 1)^−(1+ε)`` (``n`` = extrapolations kept so far); otherwise its sample
takes the base step from its last kept point. A least-squares system that is singular or gives coefficients
larger than ``max_coefficient`` (ill-conditioned) is not used at all: the base step is taken. No check
synchronises with the device.

Residual norms ``‖g‖`` are measured in the norm of the operator's guarantee, the one the base contracts in
(ℓ2 for the splitting methods on a strongly monotone ``I − W``; weighted ℓ∞ for the average iteration on a
NEMON). What this guarantees, per sample, with ``T`` the base method's step and ``ρ < 1`` its contraction
factor in that norm:

* Every point reported at a check or returned is a kept point, never a refused candidate: at a check, a
  sample whose candidate was refused reports the kept point before it (the driver then returns each
  sample's best checked point).
* Along kept points ``‖g‖`` never increases: a kept candidate does not increase it, and a base step from a
  kept point multiplies it by at most ``ρ`` (``‖g(Tx)‖ = ‖T(Tx) − T(x)‖ ≤ ρ‖g(x)‖``).
* A refused candidate costs one evaluation and is followed by a base step, so with every extrapolation
  refused the solve takes at most twice the base's iterations; kept ones cannot stall it either, since the
  summable bound forces ``‖g‖ → 0`` along them. Hence the solve converges whenever the base does. This is
  not a rate: an extrapolation that is kept but barely lowers ``‖g‖`` costs an iteration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..activations import Activation
from ..errors import InputError
from ..operators.base import FrozenOperator
from ..operators.guarantees import Guarantee
from .base import Iteration, Solver, Splitting

_TINY = torch.finfo(torch.float64).tiny


class _AndersonIteration(Iteration):
    x0: Tensor

    def __init__(self, base: Iteration, cfg: Anderson, norm: Callable[[Tensor], Tensor]) -> None:
        self.base, self.cfg, self.norm = base, cfg, norm
        self.x0, self.alpha = base.x0, base.alpha
        self.exact_pre_activation = base.exact_pre_activation
        x0 = self.x0
        batch, size, mem = x0.shape[0], x0[0].numel(), cfg.memory
        self.gs = x0.new_zeros(batch, mem, size)  # residuals gᵢ = T(xᵢ) − xᵢ
        self.ms = x0.new_zeros(batch, mem, size)  # mixed points xᵢ + β gᵢ
        self.gram = torch.zeros(batch, mem, mem, dtype=torch.float64, device=x0.device)
        self.count = 0
        self.g0: Tensor | None = None
        self.g_kept: Tensor | None = None
        self.sdtype = torch.promote_types(x0.dtype, torch.float32)  # the safeguard's bound overflows fp16
        self.kept = torch.zeros(batch, dtype=self.sdtype, device=x0.device)
        self.candidate = torch.zeros(batch, dtype=torch.bool, device=x0.device)
        self.fallback = x0
        self.z_prev: Tensor | None = None
        self.v_prev: Tensor | None = None
        self.bshape = (-1,) + (1,) * (x0.dim() - 1)

    def step(self, x: Tensor, check: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        cfg = self.cfg
        # the candidate equilibrium of every step is kept for one step: if the next point is refused, it is
        # the one reported
        f, z, v = self.base.step(x, True)
        g = (f - x).flatten(1)
        gnorm = self.norm(g.view_as(x))
        z_seen, v_seen = z, v
        if self.g0 is None or self.g_kept is None:
            self.g0 = self.g_kept = gnorm
            fallback = f
            ok = torch.ones_like(self.candidate)
        else:  # safeguard: keep an extrapolated point only if its residual is small enough
            bound = (self.kept + 1.0).pow_(-(1.0 + cfg.safeguard_decay)).mul_(self.g0).mul_(cfg.safeguard_scale)
            ok = ~self.candidate | ((gnorm <= bound) & (gnorm <= self.g_kept))
            self.kept += self.candidate & ok
            self.g_kept = torch.where(ok, gnorm, self.g_kept)
            fallback = torch.where(ok.view(self.bshape), f, self.fallback)
            if check:  # a refused point is not reported: its sample's last kept point (the previous one) is
                assert z is not None and self.z_prev is not None
                keep = ok.view(self.bshape)
                z = torch.where(keep, z, self.z_prev)
                if v is not None and self.v_prev is not None:
                    v = torch.where(keep, v, self.v_prev)
        self.z_prev, self.v_prev = z_seen, v_seen

        slot = self.count % cfg.memory
        self.count += 1
        k = min(self.count, cfg.memory)
        self.gs[:, slot] = g
        self.ms[:, slot] = torch.add(x.flatten(1), g, alpha=cfg.mixing)
        gs = self.gs[:, :k]
        col = (gs * g.unsqueeze(1)).sum(dim=2).to(torch.float64)
        self.gram[:, slot, :k] = col
        self.gram[:, :k, slot] = col
        if k == 1:
            self.candidate, self.fallback = torch.zeros_like(self.candidate), fallback
            return fallback, z, v

        gram = self.gram[:, :k, :k].clone()
        diag = gram.diagonal(dim1=1, dim2=2)
        diag.add_(diag.mean(dim=1, keepdim=True).mul_(cfg.regularization).add_(_TINY))
        coef, info = torch.linalg.solve_ex(gram, torch.ones_like(gram[:, :, :1]))
        coef = coef.squeeze(2)
        coef = coef / coef.sum(dim=1, keepdim=True)
        good = (info == 0) & (coef.abs().sum(dim=1) <= cfg.max_coefficient)  # NaN/Inf fail here too
        coef = torch.where(good.unsqueeze(1), coef, 0.0).to(x.dtype)
        extrapolated = (coef.unsqueeze(1) @ self.ms[:, :k]).view_as(x)

        use = ok & good
        self.candidate, self.fallback = use, fallback
        return torch.where(use.view(self.bshape), extrapolated, fallback), z, v


@dataclass(frozen=True)
class Anderson(Solver):
    """Anderson acceleration wrapped around a splitting method; the stopping options are the base's.

    Args:
        base: the method to accelerate (its ``tol``, ``max_iter``, ``check_every``, ``strict`` apply).
        memory: number of past iterates used.
        regularization: Tikhonov term of the least-squares system, relative to its scale.
        mixing: ``β`` in ``x̃ = Σ cᵢ(xᵢ + β gᵢ)``.
        max_coefficient: systems giving ``Σ|cᵢ|`` above this are treated as ill-conditioned.
        safeguard_scale, safeguard_decay: ``D`` and ``ε`` of the summable bound ``D‖g₀‖(n + 1)^−(1+ε)``.
    """

    base: Splitting
    memory: int = 5
    regularization: float = 1e-8
    mixing: float = 1.0
    max_coefficient: float = 1e3
    safeguard_scale: float = 1e6
    safeguard_decay: float = 1e-6

    def __post_init__(self) -> None:
        if not isinstance(self.base, Splitting):
            raise InputError(f"Anderson wraps a splitting method, got {type(self.base).__name__}")
        if not isinstance(self.memory, int) or self.memory < 2:
            raise InputError(f"Anderson memory must be an integer ≥ 2 (points kept), got {self.memory}")
        if not self.regularization >= 0 or not self.max_coefficient > 0:
            raise InputError("Anderson needs regularization ≥ 0 and max_coefficient > 0")
        if not self.safeguard_scale > 0 or not self.safeguard_decay > 0:
            raise InputError("Anderson needs safeguard_scale > 0 and safeguard_decay > 0")
        if not 0.0 < self.mixing <= 1.0:
            raise InputError(f"Anderson mixing must be in (0, 1], got {self.mixing}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"anderson({self.base.name})"

    tol = property(lambda self: self.base.tol)  # type: ignore[assignment]
    max_iter = property(lambda self: self.base.max_iter)  # type: ignore[assignment]
    check_every = property(lambda self: self.base.check_every)  # type: ignore[assignment]
    strict = property(lambda self: self.base.strict)  # type: ignore[assignment]

    def refusal(self, guarantee: Guarantee, act: Activation) -> str | None:
        if not self.base.accelerable:
            return f"extrapolation would lose what {self.base.name} proves (its selection among fixed points)"
        return self.base.refusal(guarantee, act)

    def iteration(self, op: FrozenOperator, act: Activation, y: Tensor, start: Tensor | None = None) -> Iteration:
        return _AndersonIteration(self.base.iteration(op, act, y, start), self, op.guarantee.norm)

    def with_options(self, **changes: Any) -> Anderson:
        own = {f.name for f in dataclasses.fields(self)}
        mine = {k: v for k, v in changes.items() if k in own}
        base = self.base.with_options(**{k: v for k, v in changes.items() if k not in own})
        return dataclasses.replace(self, **{**mine, "base": mine.get("base", base)})
