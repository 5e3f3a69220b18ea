"""What every solver shares: configuration, the iteration driver, statistics (SPEC 2).

A solver is an immutable configuration object. :meth:`Solver.solve` builds a one-solve
:class:`Iteration` (which precomputes what it needs: a step size, a resolvent), then runs it, checking the
per-sample fixed-point residual ``‖z − σ(Wz + y)‖ / (‖z‖ + ε‖y‖)``, in the norm of the operator's guarantee,
every ``check_every`` iterations (a few device synchronisations per check). A solver first checks that it has
a proof for that guarantee (:meth:`Solver.refusal`). Each iteration also yields the candidate equilibrium ``z`` and its
pre-activation ``Wz + y``; each sample's returned point is its checked point of smallest residual, exact
there. Checks are scheduled where the observed linear rate predicts convergence unless ``check_every``
fixes them; a solve whose iteration stops progressing (its steps stop shrinking) ends early and says so.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor

from ..activations import Activation
from ..errors import ConvergenceError, ConvergenceWarning, InputError, UnprovenSolverError
from ..operators.base import FrozenOperator
from ..operators.guarantees import Guarantee, l2_norm

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
        residual: the relative fixed-point residual of each sample at the returned point (exact).
        residual_trace: the largest residual over the batch at each check's point, in order (one entry per
            check, never padded; an estimate where the iteration gives one and no exact check was needed).
        checked_at: the iteration of each check.
        converged: whether every sample reached the tolerance.
        stalled: whether the solve stopped early, its steps no longer shrinking (a tolerance out of reach).
        time_s: wall time of the solve, set-up included.
        alpha: the step size used.
        residual_norm: each sample's absolute residual ``‖z − σ(Wz + y)‖`` at the returned point, in the norm
            of the operator's guarantee (``guarantee.norm``).
        guarantee: what is proved about the operator solved with.
    """

    solver: str
    iterations: int
    residual: Tensor = dataclasses.field(repr=False)
    residual_trace: tuple[float, ...] = dataclasses.field(repr=False)
    checked_at: tuple[int, ...] = dataclasses.field(repr=False)
    converged: bool
    time_s: float
    alpha: float
    residual_norm: Tensor = dataclasses.field(repr=False)
    guarantee: Guarantee = dataclasses.field(repr=False)
    stalled: bool = False

    @property
    def max_residual(self) -> float:
        """The largest per-sample residual at the returned point."""
        return float(self.residual.max())

    @property
    def error_bound(self) -> Tensor:
        """Per sample, an a-posteriori bound on ``‖z − z*‖`` in the guarantee's norm, from the residual and the
        guarantee's constants (:meth:`~mondeq.operators.guarantees.Guarantee.error_bound`; computed on request:
        an ℓ2 bound needs ``‖I − W‖₂``)."""
        return self.guarantee.error_bound(self.residual_norm)

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
    exact product before it stops. With ``check`` false the last two may be ``None``. The driver may keep
    ``z`` and ``v`` (the best point so far) while the iteration goes on: a step never writes into tensors
    it returned before.
    """

    if TYPE_CHECKING:  # read-only: iterations may make x₀ on request (a property) or hold it (an attribute)

        @property
        def x0(self) -> Tensor: ...

    alpha: float
    exact_pre_activation: bool = True
    """Whether the pre-activations ``step`` returns are exact products (not estimates)."""

    @abstractmethod
    def step(self, x: Tensor, check: bool) -> tuple[Tensor, Tensor | None, Tensor | None]: ...


class StateIsCandidate(Iteration):
    """An iteration whose state is the candidate equilibrium ``z`` itself (forward–backward, the average
    iteration): it starts from ``start`` or zero, and each step's product ``Wz + y`` is the exact
    pre-activation of ``z``."""

    def __init__(self, op: FrozenOperator, act: Activation, y: Tensor, alpha: float, start: Tensor | None) -> None:
        self.op, self.act, self.y, self.alpha, self.start = op, act, y, alpha, start

    @property
    def x0(self) -> Tensor:  # made on request, not held through the solve
        return torch.zeros_like(self.y) if self.start is None else self.start


class Solver(ABC):
    """A fixed-point solver for ``z = σ(Wz + y)``; it runs only on operators whose guarantee it has a proof for."""

    name: ClassVar[str]
    tol: float
    max_iter: int
    check_every: int | None
    strict: bool

    @abstractmethod
    def refusal(self, guarantee: Guarantee, act: Activation) -> str | None:
        """Why this solver has no convergence proof for ``guarantee`` and ``act`` (``None``: it has one)."""

    @abstractmethod
    def iteration(self, op: FrozenOperator, act: Activation, y: Tensor, start: Tensor | None = None) -> Iteration:
        """Prepare one solve (step size, resolvent …) for ``y`` of shape ``(batch, *op.shape)``, from the
        candidate equilibrium ``start`` (``None``: zero)."""

    def check(self, op: FrozenOperator, act: Activation) -> None:
        """Raise :class:`UnprovenSolverError` unless this solver has a proof for ``op``'s guarantee."""
        why = self.refusal(op.guarantee, act)
        if why is not None:
            raise UnprovenSolverError(
                f"{self.name} is not proved for an operator that is {op.guarantee.describe()}: {why}"
            )

    @abstractmethod
    def with_options(self, **changes: Any) -> Solver:
        """A copy with some options changed; an unknown option raises ``TypeError``."""

    def solve(self, op: FrozenOperator, act: Activation, y: Tensor, start: Tensor | None = None) -> Solution:
        """Solve ``z = σ(Wz + y)`` for every sample of ``y``, from ``start`` (a warm start; ``None``: zero), and
        report how it went. Residuals are measured in the norm of the operator's guarantee.

        Each sample's returned point is the checked point with its smallest residual, measured exactly
        (with ``W``) at that point (in the first 50 iterations, where no stall can be declared yet, simply
        the last exact check: short solves pay no bookkeeping). The solve stops when every sample has a
        point within ``tol``, at ``max_iter``, or when it stalls: for ``max(100, j/2)`` iterations since
        iteration ``j``, no sample above ``tol`` has taken a shorter step ``‖T(x) − x‖`` than before (the
        base methods contract their state, so in exact arithmetic each step is shorter than the last: a
        tolerance below what the working precision allows, or an iteration that no longer progresses).

        Raises:
            UnprovenSolverError: the solver has no proof for the operator's guarantee.
            InputError: ``y`` or ``start`` has the wrong shape, or ``y`` holds NaN/Inf.
            ConvergenceError: the residual became non-finite, or (``strict``) the tolerance was not met.
        Warns:
            ConvergenceWarning: the tolerance was not met (``max_iter`` reached, or a stall; non-strict).
        """
        check_shape(y, op.shape, "y")
        if y.dtype != op.dtype or y.device != op.device:
            raise InputError(
                f"y is {y.dtype} on {y.device} but the operator is {op.dtype} on {op.device}; "
                "move the model or the input so that they match"
            )
        if start is not None:
            check_shape(start, op.shape, "start")
            if start.shape != y.shape or start.device != y.device:
                raise InputError(f"start is {tuple(start.shape)} on {start.device} but y is {tuple(y.shape)} on "
                                 f"{y.device}: give one starting point per sample, on y's device")
            check_finite(start, "start")
            start = start.detach().to(y.dtype, copy=True)  # the solve may return it: never the caller's tensor
        self.check(op, act)
        began = time.perf_counter()
        norm = op.guarantee.norm
        it = self.iteration(op, act, y, start)
        floor = residual_floor(y.detach(), norm)
        tol, max_iter = self.tol, self.max_iter
        x, trace, checked = it.x0, [], []
        best: _Best | None = None
        shortest: Tensor | None = None  # per sample, the smallest state step ‖T(x) − x‖ seen at a check
        progress_at, stalled = 0, False
        # the first iterate says little (z₀ = 0): the first check comes after two iterations
        next_check, k, estimates = self.check_every or 2, 0, not it.exact_pre_activation
        for k in range(1, max_iter + 1):
            check = k == next_check or k == max_iter
            x_next, z, v = it.step(x, check)
            if check:
                assert z is not None
                estimated = v is not None and not it.exact_pre_activation
                if v is None or (estimated and not estimates):
                    v, estimated = op.W(z, add=y), False
                num, res = _residual_at(z, v, act, floor, norm)
                # a short solve keeps its latest exact check as the best and cannot stall yet: no bookkeeping
                tracked = best if k >= _STALL_ITERATIONS // 2 else None
                step = None if tracked is None else _step_norm(x_next, x, norm)
                worst, seen, better, progressed, new = _summary(res, tracked, step, shortest, tol)
                if not math.isfinite(worst):
                    check_finite(y, "y (the input term of the equilibrium)")
                    raise ConvergenceError(
                        f"{self.name}: the residual became {worst} at iteration {k} although the input is "
                        "finite; the iteration overflowed"
                    )
                if step is not None:
                    shortest = step if shortest is None else torch.minimum(step, shortest)
                if progressed:
                    progress_at = k
                stalled = k - progress_at >= max(_STALL_ITERATIONS, progress_at // 2)
                if estimated and (seen <= tol or k == max_iter or stalled):
                    # confirm with the exact product: the residuals reported are exact
                    v, estimated = op.W(z, add=y), False
                    num, res = _residual_at(z, v, act, floor, norm)
                    worst, seen, better, _, new = _summary(res, tracked, step, None, tol)
                trace.append(worst)
                checked.append(k)
                if not estimated:
                    best = _Best(z, v, res, num) if best is None else best.merge(z, v, res, num, new, better)
                    if seen <= tol or k == max_iter or stalled:
                        break
                rate = _rate(trace, checked)
                if rate is not None and rate > 0.95:
                    estimates = False  # slow or stalled: round-off in an estimate must not hide convergence
                gap = self.check_every or _predicted_gap(rate, worst, tol)
                next_check = k + gap
            x = x_next
        assert best is not None
        best_worst = float(best.res.max())
        converged = best_worst <= tol
        stats = SolverStats(
            solver=self.name,
            iterations=k,
            residual=best.res,
            residual_trace=tuple(trace),
            checked_at=tuple(checked),
            converged=converged,
            stalled=stalled and not converged,
            time_s=time.perf_counter() - began,
            alpha=it.alpha,
            residual_norm=best.num,
            guarantee=op.guarantee,
        )
        if not converged:
            if stats.stalled:
                msg = (
                    f"{self.name} stalled at residual {best_worst:.3g} > tol={tol:g}: its steps stopped "
                    f"shrinking at iteration {progress_at} (stopped at {k}); tol is likely below what "
                    f"{str(y.dtype).removeprefix('torch.')} round-off allows for this problem: raise tol"
                )
            else:
                msg = (
                    f"{self.name} stopped at max_iter={max_iter} with residual {best_worst:.3g} > "
                    f"tol={tol:g}; raise max_iter or tol"
                )
            if self.strict:
                raise ConvergenceError(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=2)
        return Solution(best.z, best.v, stats)


_STALL_ITERATIONS = 100
"""A solve stalls when, for ``max(this, j/2)`` iterations since iteration ``j``, no sample above the tolerance
has taken a shorter step ``‖T(x) − x‖`` than before. The base methods are contractions of their state, so in
exact arithmetic every step is shorter than the last; when none is for that long, round-off dominates."""


@dataclass(frozen=True)
class _Best:
    """Per sample, the checked point with the smallest exact residual so far, with its pre-activation (until
    half the stall window has passed: the latest exact check)."""

    z: Tensor
    v: Tensor
    res: Tensor
    num: Tensor  # the absolute residual

    def merge(self, z: Tensor, v: Tensor, res: Tensor, num: Tensor, new: Tensor | None, better: int) -> _Best:
        """The best of this and the point ``z`` with residuals ``res`` (absolute: ``num``), smaller where ``new``
        holds (in ``better`` samples)."""
        if better == res.numel() or new is None:  # the usual case: no copy
            return _Best(z, v, res, num)
        if better == 0:
            return self
        mask = new.view((-1,) + (1,) * (z.dim() - 1))
        return _Best(torch.where(mask, z, self.z), torch.where(mask, v, self.v), torch.where(new, res, self.res),
                     torch.where(new, num, self.num))


def _step_norm(x_next: Tensor, x: Tensor, norm: Callable[[Tensor], Tensor]) -> Tensor:
    """Per-sample ``‖T(x) − x‖`` of the iteration's state (a statistic: never part of a graph)."""
    with torch.no_grad():
        return norm(x_next - x)


def _summary(
    res: Tensor, best: _Best | None, step: Tensor | None, shortest: Tensor | None, tol: float
) -> tuple[float, float, int, bool, Tensor | None]:
    """With one device synchronisation: the largest residual of ``res``; the largest per-sample best residual
    once ``res`` is merged into ``best``; how many samples ``res`` improves; whether a sample still above
    ``tol`` took a ``step`` shorter than any before (``shortest``; ``None``: it did); and where ``res``
    improves. Without a ``best`` (nothing tracked), ``res`` is the best and counts as progress."""
    if best is None or step is None:
        worst = float(res.max())
        return worst, worst, res.numel(), True, None
    new = res < best.res
    merged = torch.where(new, res, best.res)
    shorter = torch.ones_like(new) if shortest is None else step < shortest
    progressed = (shorter & (merged > tol)).any()
    summary = torch.stack((res.max(), merged.max(), new.sum().to(res.dtype), progressed.to(res.dtype)))
    worst, seen, better, flag = summary.tolist()
    return worst, seen, round(better), flag > 0, new


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
        alpha: the step size (``None``: the method's default; ``"auto"``: the step the operator's constants
            ``m`` and ``L ≈ ‖I − W‖₂`` make fastest, ``1/√(mL)`` for the splittings, SPEC 2).
        tol: tolerance on the per-sample relative residual.
        max_iter: iteration limit.
        check_every: iterations between residual checks (each synchronises with the device); ``None``
            schedules each check where the observed linear rate predicts convergence (at most 8 ahead).
        strict: raise :class:`ConvergenceError` instead of warning when ``tol`` is not met.
    """

    accelerable: ClassVar[bool] = True
    """Whether Anderson acceleration keeps what the method proves."""
    alpha: float | Literal["auto"] | None = None
    tol: float = 1e-4
    max_iter: int = 300
    check_every: int | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.alpha, str):
            if self.alpha != "auto":
                raise InputError(f"{self.name}: alpha must be a number > 0 or 'auto', got {self.alpha!r}")
        elif self.alpha is not None and not self.alpha > 0:
            raise InputError(f"{self.name}: alpha must be > 0, got {self.alpha}")
        if not self.tol > 0:
            raise InputError(f"{self.name}: tol must be > 0, got {self.tol}")
        if self.max_iter < 1:
            raise InputError(f"{self.name}: max_iter must be ≥ 1, got {self.max_iter}")
        if self.check_every is not None and self.check_every < 1:
            raise InputError(f"{self.name}: check_every must be ≥ 1, got {self.check_every}")

    @property
    def given_alpha(self) -> float | None:
        """The step size fixed by the caller (``None`` where the method or the operator chooses it)."""
        return None if isinstance(self.alpha, str) else self.alpha

    def with_options(self, **changes: Any) -> Splitting:
        return dataclasses.replace(self, **changes)


def residual_floor(y: Tensor, norm: Callable[[Tensor], Tensor] = l2_norm) -> Tensor:
    """Per-sample ``ε‖y‖`` (plus the smallest positive float, so that ``y = 0`` gives ``0/tiny = 0``)."""
    return norm(y).mul_(RESIDUAL_EPS).add_(torch.finfo(y.dtype).tiny)


def relative_residual(
    z: Tensor, fz: Tensor, floor: Tensor, *, overwrite: bool = False, norm: Callable[[Tensor], Tensor] = l2_norm
) -> Tensor:
    """Per-sample ``‖z − f(z)‖ / (‖z‖ + floor)`` over all non-batch dimensions (``overwrite``: the
    difference is formed in ``fz``'s memory, one buffer fewer)."""
    return _residual_parts(z, fz, floor, overwrite, norm)[1]


def _residual_parts(
    z: Tensor, fz: Tensor, floor: Tensor, overwrite: bool, norm: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    num = norm(fz.sub_(z) if overwrite else z - fz)
    den = norm(z).add_(floor)
    return num, num / den


def _residual_at(
    z: Tensor, v: Tensor, act: Activation, floor: Tensor, norm: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """The absolute and relative residuals of ``z`` against ``σ(v)`` (:func:`relative_residual`), formed in
    ``σ(v)``'s memory when it is new (a statistic: never part of a graph)."""
    with torch.no_grad():
        fz = act(v)
        return _residual_parts(z, fz, floor, writable(fz, z, v), norm)


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
    if t.shape[0] == 0:
        raise InputError(f"{what} is an empty batch (shape {tuple(t.shape)}): give at least one sample")
    if not t.is_floating_point():
        raise InputError(f"{what} must be a floating-point tensor, got {t.dtype}")
