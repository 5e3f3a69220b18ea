"""What every solver shares: configuration, the iteration driver, statistics (SPEC 2).

A solver is an immutable configuration object. :meth:`Solver.solve` builds a one-solve
:class:`Iteration` (which precomputes what it needs: a step size, a resolvent), then runs it, checking the
per-sample fixed-point residual ``‖z − σ(Wz + y)‖ / (‖z‖ + ε‖y‖)`` every ``check_every`` iterations (one
device synchronisation per check). Each iteration also yields the candidate equilibrium ``z`` and its
pre-activation ``Wz + y``, so the residual is exact at the point that is returned. Checks are scheduled
where the observed linear rate predicts convergence unless ``check_every`` fixes them.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..activations import Activation
from ..errors import ConvergenceError, ConvergenceWarning, InputError
from ..operators.base import FrozenOperator

RESIDUAL_EPS = 1e-2
"""The ``ε`` of the relative residual ``‖z − σ(Wz + y)‖ / (‖z‖ + ε‖y‖)``.

The floor ``ε‖y‖`` is relative to the sample's own scale (``‖z*‖`` is of the order of ``‖y‖/m``), so a
sample whose equilibrium is (nearly) zero is judged on an absolute error small against its input, and a
tiny adjoint (a gradient of order 1/batch) is judged like a large one.
"""


@dataclass(frozen=True)
class SolverStats:
    """What happened in one solve.

    Attributes:
        solver: the solver's name.
        iterations: iterations run (operator evaluations).
        residual: the relative fixed-point residual of each sample at the returned point.
        residual_trace: the largest residual over the batch at each check, in order (one entry per check,
            never padded).
        checked_at: the iteration of each check.
        converged: whether every sample reached the tolerance.
        time_s: wall time of the solve, set-up included.
        alpha: the step size used.
    """

    solver: str
    iterations: int
    residual: Tensor = dataclasses.field(repr=False)
    residual_trace: tuple[float, ...] = dataclasses.field(repr=False)
    checked_at: tuple[int, ...] = dataclasses.field(repr=False)
    converged: bool
    time_s: float
    alpha: float

    @property
    def max_residual(self) -> float:
        """The largest per-sample residual at the returned point."""
        return self.residual_trace[-1]

    def __repr__(self) -> str:
        return (
            f"SolverStats({self.solver}: {self.iterations} iterations, residual {self.max_residual:.3g}, "
            f"converged={self.converged}, {1e3 * self.time_s:.2f} ms, alpha={self.alpha:.4g})"
        )


@dataclass(frozen=True)
class Solution:
    """An equilibrium ``z`` of ``z = σ(Wz + y)``, its pre-activation ``Wz + y`` and the solve's statistics."""

    z: Tensor
    pre_activation: Tensor
    stats: SolverStats


class Iteration(ABC):
    """The state machine of one solve: ``x₀`` and a step ``x ↦ T(x)``.

    ``step(x, check)`` returns ``T(x)`` and, when ``check`` is true, the candidate equilibrium ``z`` read
    from ``x`` with its pre-activation ``Wz + y`` or an estimate of it that costs no product (else
    ``None``: the driver applies ``W``). The driver confirms a residual computed from an estimate with the
    exact product before it stops. With ``check`` false the last two may be ``None``.
    """

    x0: Tensor
    alpha: float
    exact_pre_activation: bool = True
    """Whether the pre-activations ``step`` returns are exact products (not estimates)."""

    @abstractmethod
    def step(self, x: Tensor, check: bool) -> tuple[Tensor, Tensor | None, Tensor | None]: ...


class Solver(ABC):
    """A fixed-point solver for ``z = σ(Wz + y)`` with a monotone ``I − W``."""

    name: ClassVar[str]
    tol: float
    max_iter: int
    check_every: int | None
    strict: bool

    @abstractmethod
    def iteration(self, op: FrozenOperator, act: Activation, y: Tensor) -> Iteration:
        """Prepare one solve (step size, resolvent …) for ``y`` of shape ``(batch, *op.shape)``."""

    @abstractmethod
    def with_options(self, **changes: Any) -> Solver:
        """A copy with some options changed; an unknown option raises ``TypeError``."""

    def solve(self, op: FrozenOperator, act: Activation, y: Tensor) -> Solution:
        """Solve ``z = σ(Wz + y)`` for every sample of ``y`` and report how it went.

        Raises:
            InputError: ``y`` has the wrong shape or holds NaN/Inf.
            ConvergenceError: the residual became non-finite, or (``strict``) the tolerance was not met.
        Warns:
            ConvergenceWarning: the tolerance was not met within ``max_iter`` (non-strict).
        """
        check_shape(y, op.shape, "y")
        if y.dtype != op.dtype or y.device != op.device:
            raise InputError(
                f"y is {y.dtype} on {y.device} but the operator is {op.dtype} on {op.device}; "
                "move the model or the input so that they match"
            )
        start = time.perf_counter()
        it = self.iteration(op, act, y)
        floor = residual_floor(y.detach())
        tol, max_iter = self.tol, self.max_iter
        x, trace, checked = it.x0, [], []
        z = v = res = None
        # the first iterate says little (z₀ = 0): the first check comes after two iterations
        next_check, k, estimates = self.check_every or 2, 0, not it.exact_pre_activation
        for k in range(1, max_iter + 1):
            check = k == next_check or k == max_iter
            x_next, z_k, v_k = it.step(x, check)
            if check:
                assert z_k is not None
                estimated = v_k is not None and not it.exact_pre_activation
                if v_k is None or (estimated and not estimates):
                    v_k, estimated = op.W(z_k, add=y), False
                z, v = z_k, v_k
                res = _residual_at(z, v, act, floor)
                worst = float(res.max())
                if estimated and (worst <= tol or k == max_iter):
                    v = op.W(z, add=y)  # confirm with the exact product: the reported residual is exact
                    res = _residual_at(z, v, act, floor)
                    worst = float(res.max())
                trace.append(worst)
                checked.append(k)
                if worst <= tol:
                    break
                if not math.isfinite(worst):
                    check_finite(y, "y (the input term of the equilibrium)")
                    raise ConvergenceError(
                        f"{self.name}: the residual became {worst} at iteration {k} although the input is "
                        "finite; the iteration overflowed"
                    )
                rate = _rate(trace, checked)
                if rate is not None and rate > 0.95:
                    estimates = False  # slow or stalled: round-off in an estimate must not hide convergence
                gap = self.check_every or _predicted_gap(rate, trace[-1], tol)
                next_check = k + gap
            x = x_next
        assert z is not None and v is not None and res is not None
        converged = trace[-1] <= tol
        stats = SolverStats(
            solver=self.name,
            iterations=k,
            residual=res,
            residual_trace=tuple(trace),
            checked_at=tuple(checked),
            converged=converged,
            time_s=time.perf_counter() - start,
            alpha=it.alpha,
        )
        if not converged:
            msg = (
                f"{self.name} stopped at max_iter={max_iter} with residual {trace[-1]:.3g} > "
                f"tol={tol:g}; raise max_iter or tol"
            )
            if self.strict:
                raise ConvergenceError(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=2)
        return Solution(z, v, stats)


def _rate(trace: list[float], checked: list[int]) -> float | None:
    """The per-iteration decay of the residual between the last two checks (``None``: unknown)."""
    if len(trace) < 2 or not trace[-2] > 0.0:
        return None
    return (trace[-1] / trace[-2]) ** (1.0 / (checked[-1] - checked[-2]))


def _predicted_gap(rate: float | None, residual: float, tol: float, max_gap: int = 8) -> int:
    """Iterations until the next residual check.

    The residual of these methods decays linearly, so the iteration at which it crosses ``tol`` is
    predictable from the last observed rate; checking there (at most ``max_gap`` ahead) saves most checks
    and overshoots little.
    """
    if rate is None or not 0.0 < rate < 1.0:
        return 1
    return max(1, min(max_gap, math.ceil(math.log(tol / residual) / math.log(rate))))


@dataclass(frozen=True, kw_only=True)
class Splitting(Solver):
    """Options shared by the splitting methods.

    Args:
        alpha: the step size (``None``: the method's default).
        tol: tolerance on the per-sample relative residual.
        max_iter: iteration limit.
        check_every: iterations between residual checks (each synchronises with the device); ``None``
            schedules each check where the observed linear rate predicts convergence (at most 8 ahead).
        strict: raise :class:`ConvergenceError` instead of warning when ``tol`` is not met.
    """

    alpha: float | None = None
    tol: float = 1e-4
    max_iter: int = 300
    check_every: int | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        if self.alpha is not None and not self.alpha > 0:
            raise InputError(f"{self.name}: alpha must be > 0, got {self.alpha}")
        if not self.tol > 0:
            raise InputError(f"{self.name}: tol must be > 0, got {self.tol}")
        if self.max_iter < 1:
            raise InputError(f"{self.name}: max_iter must be ≥ 1, got {self.max_iter}")
        if self.check_every is not None and self.check_every < 1:
            raise InputError(f"{self.name}: check_every must be ≥ 1, got {self.check_every}")

    def with_options(self, **changes: Any) -> Splitting:
        return dataclasses.replace(self, **changes)


def residual_floor(y: Tensor) -> Tensor:
    """Per-sample ``ε‖y‖`` (plus the smallest positive float, so that ``y = 0`` gives ``0/tiny = 0``)."""
    norm = torch.linalg.vector_norm(y.flatten(1), dim=1)
    return norm.mul_(RESIDUAL_EPS).add_(torch.finfo(y.dtype).tiny)


def relative_residual(z: Tensor, fz: Tensor, floor: Tensor, *, overwrite: bool = False) -> Tensor:
    """Per-sample ``‖z − f(z)‖ / (‖z‖ + floor)`` over all non-batch dimensions (``overwrite``: the
    difference is formed in ``fz``'s memory, one buffer fewer)."""
    num = torch.linalg.vector_norm((fz.sub_(z) if overwrite else z - fz).flatten(1), dim=1)
    den = torch.linalg.vector_norm(z.flatten(1), dim=1).add_(floor)
    return num / den


def _residual_at(z: Tensor, v: Tensor, act: Activation, floor: Tensor) -> Tensor:
    """:func:`relative_residual` of ``z`` against ``σ(v)``, formed in ``σ(v)``'s memory when it is new (a
    statistic: never part of a graph)."""
    with torch.no_grad():
        fz = act(v)
        return relative_residual(z, fz, floor, overwrite=writable(fz, z, v))


def writable(t: Tensor, *inputs: Tensor) -> bool:
    """Whether ``t``, computed from ``inputs``, may be overwritten: a dense tensor of the inputs' shape that
    shares memory with none of them, outside an autograd graph being recorded (which may need it)."""
    if torch.is_grad_enabled() and (t.requires_grad or any(x.requires_grad for x in inputs)):
        return False
    ptr = t.untyped_storage().data_ptr()
    return t.is_contiguous() and all(
        x.shape == t.shape and x.untyped_storage().data_ptr() != ptr for x in inputs
    )


def check_finite(t: Tensor, what: str) -> None:
    """Raise :class:`InputError` if ``t`` holds NaN or Inf (one device synchronisation)."""
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{what} holds NaN or Inf values")


def check_shape(t: Tensor, shape: tuple[int, ...], what: str) -> None:
    """Raise :class:`InputError` unless ``t`` is a floating batch of samples of ``shape``."""
    if not isinstance(t, Tensor):
        raise InputError(f"{what} must be a tensor, got {type(t).__name__}")
    if t.dim() != len(shape) + 1 or tuple(t.shape[1:]) != tuple(shape):
        want = ", ".join(map(str, shape))
        raise InputError(f"{what} must have shape (batch, {want}), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise InputError(f"{what} must be a floating-point tensor, got {t.dtype}")
