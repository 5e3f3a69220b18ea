"""What every solver shares: configuration, the iteration driver, statistics (SPEC 2).

A solver is an immutable configuration object. :meth:`Solver.solve` builds a one-solve
:class:`Iteration` (which precomputes what it needs: a step size, a resolvent), then runs it, checking the
per-sample fixed-point residual ``‖z − σ(Wz + y)‖ / (‖z‖ + ε)`` every ``check_every`` iterations (one
device synchronisation per check). Each iteration also yields the candidate equilibrium ``z`` and its
pre-activation ``Wz + y``, so the residual is exact at the point that is returned.
"""

from __future__ import annotations

import dataclasses
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

RESIDUAL_EPS = 1e-6
"""The ``ε`` of the relative residual ``‖z − σ(Wz + y)‖ / (‖z‖ + ε)``."""


@dataclass(frozen=True)
class SolverStats:
    """What happened in one solve.

    Attributes:
        solver: the solver's name.
        iterations: iterations run (operator evaluations).
        residual: the relative fixed-point residual of each sample at the returned point.
        residual_trace: the largest residual over the batch at each check, in order (one entry per check,
            never padded).
        converged: whether every sample reached the tolerance.
        time_s: wall time of the solve, set-up included.
        alpha: the step size used.
    """

    solver: str
    iterations: int
    residual: Tensor = dataclasses.field(repr=False)
    residual_trace: tuple[float, ...] = dataclasses.field(repr=False)
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
    from ``x`` with its pre-activation ``Wz + y`` (otherwise two ``None``).
    """

    x0: Tensor
    alpha: float

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
        check_input(y, op.shape, "y")
        start = time.perf_counter()
        it = self.iteration(op, act, y)
        every = self.check_every or (1 if y.device.type == "cpu" else 5)
        tol = self.tol
        x, trace = it.x0, []
        z = v = res = None
        k = 0
        for k in range(1, self.max_iter + 1):
            check = k % every == 0 or k == self.max_iter
            x_next, z_k, v_k = it.step(x, check)
            if check:
                z, v = z_k, v_k
                res = relative_residual(z, act(v))
                worst = res.max()
                trace.append(worst)
                if bool(worst <= tol):
                    break
                if not bool(torch.isfinite(worst)):
                    raise ConvergenceError(
                        f"{self.name}: the residual became {float(worst)} at iteration {k}; "
                        "the parameters or the input hold non-finite values"
                    )
            x = x_next
        assert z is not None and v is not None and res is not None
        trace_f = tuple(torch.stack(trace).tolist())
        converged = trace_f[-1] <= tol
        stats = SolverStats(
            solver=self.name,
            iterations=k,
            residual=res,
            residual_trace=trace_f,
            converged=converged,
            time_s=time.perf_counter() - start,
            alpha=it.alpha,
        )
        if not converged:
            msg = (
                f"{self.name} stopped at max_iter={self.max_iter} with residual {trace_f[-1]:.3g} > "
                f"tol={tol:g}; raise max_iter or tol"
            )
            if self.strict:
                raise ConvergenceError(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=2)
        return Solution(z, v, stats)


@dataclass(frozen=True, kw_only=True)
class Splitting(Solver):
    """Options shared by the splitting methods.

    Args:
        alpha: the step size (``None``: the method's default).
        tol: tolerance on the per-sample relative residual.
        max_iter: iteration limit.
        check_every: iterations between residual checks (``None``: 1 on CPU, 5 on GPUs, where each
            check synchronises with the device).
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


def relative_residual(z: Tensor, fz: Tensor) -> Tensor:
    """Per-sample ``‖z − f(z)‖ / (‖z‖ + ε)`` over all non-batch dimensions."""
    num = torch.linalg.vector_norm((z - fz).flatten(1), dim=1)
    den = torch.linalg.vector_norm(z.flatten(1), dim=1).add_(RESIDUAL_EPS)
    return num / den


def check_input(t: Tensor, shape: tuple[int, ...], what: str) -> None:
    """Raise :class:`InputError` unless ``t`` is a finite floating batch of samples of ``shape``."""
    if not isinstance(t, Tensor):
        raise InputError(f"{what} must be a tensor, got {type(t).__name__}")
    if t.dim() != len(shape) + 1 or tuple(t.shape[1:]) != tuple(shape):
        raise InputError(f"{what} must have shape (batch, {', '.join(map(str, shape))}), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise InputError(f"{what} must be a floating-point tensor, got {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{what} holds NaN or Inf values")
