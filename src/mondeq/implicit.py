"""Implicit differentiation through the equilibrium (SPEC 3; Winston & Kolter 2020, section 3.3).

With ``D = diag(σ'(Wz* + y))``, an incoming gradient ``g = ∂ℓ/∂z*`` gives ``∂ℓ/∂y = u`` where
``u = D(Wᵀu + g)``, i.e. ``u = D(I − WᵀD)⁻¹g``, and ``∂ℓ/∂W = u z*ᵀ``. The equation for ``u`` is again an
equilibrium of the same kind: operator ``Wᵀ`` (``I − Wᵀ`` is as strongly monotone as ``I − W``) and the
activation ``v ↦ Dv``, the prox of a separable convex quadratic (:class:`~mondeq.activations.Diagonal`).
So the forward solvers, with ``Wᵀ`` and the transposed resolvent, solve it with the same guarantee.

For a NEMON (``W`` ℓ∞,Δ-contractive) the adjoint is solved in pre-activation form (SPEC 4.4):
``h = WᵀDh + g``, ``u = Dh``, i.e. the operator ``WᵀD`` with the identity activation. Its iteration has the
transposed Jacobian of the forward one, so it contracts with the same factor in the dual norm ``‖Δ⁻¹·‖₁``;
the iteration on ``u`` itself has Jacobian ``(1 − α)I + αDWᵀ``, which need not contract in any norm proved.
The solve's error bound then holds for ``h``, and ``‖u − u*‖1,Δ⁻¹ ≤ ‖h − h*‖1,Δ⁻¹`` since ``0 ≤ D ≤ I``.
Nothing of the forward iterations is kept: memory does not grow with the number of iterations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .activations import Activation, Diagonal, Identity
from .errors import InputError
from .operators.base import FrozenOperator, TrainableOperator
from .operators.guarantees import L1Contractive, Nonexpansive
from .solvers import Solution, Solver, SolverStats, default_solver, make_solver

IDENTITY = Identity()


class BackwardMethod(ABC):
    """How ``∂ℓ/∂y`` is obtained from ``g = ∂ℓ/∂z*`` and ``d = σ'(Wz* + y)``."""

    @abstractmethod
    def adjoint(
        self, op: FrozenOperator, d: Tensor, g: Tensor, forward_solver: Solver
    ) -> tuple[Tensor, SolverStats | None]:
        """``u ≈ D(I − WᵀD)⁻¹g`` and the statistics of the solve (``None`` when nothing is solved)."""


@dataclass(frozen=True)
class ImplicitBackward(BackwardMethod):
    """Exact implicit gradient: solve ``u = D(Wᵀu + g)`` to tolerance.

    Args:
        solver: the solver of the adjoint equilibrium; ``None`` uses the forward solver's configuration.
    """

    solver: Solver | None = None

    def adjoint(
        self, op: FrozenOperator, d: Tensor, g: Tensor, forward_solver: Solver
    ) -> tuple[Tensor, SolverStats | None]:
        solver = self.solver or forward_solver
        adjoint = op.transpose()
        if isinstance(adjoint.guarantee, L1Contractive):  # pre-activation form (see the module docstring)
            sol = solver.solve(adjoint.right_scaled(d), IDENTITY, g)
            return d * sol.z, sol.stats
        sol = solver.solve(adjoint, Diagonal(d), g)
        return sol.z, sol.stats


@dataclass(frozen=True)
class JacobianFreeBackward(BackwardMethod):
    """Approximate: ``u = Dg``, i.e. ``(I − WᵀD)⁻¹ ≈ I`` (Fung et al. 2022, "JFB: Jacobian-free
    backpropagation for implicit networks"). Not the true gradient."""

    def adjoint(
        self, op: FrozenOperator, d: Tensor, g: Tensor, forward_solver: Solver
    ) -> tuple[Tensor, SolverStats | None]:
        return d * g, None


@dataclass(frozen=True)
class PhantomBackward(BackwardMethod):
    """Approximate: ``steps`` damped iterations ``u ← (1 − λ)u + λD(Wᵀu + g)`` from ``u = Dg`` (Geng et
    al. 2021, "On training implicit models"). Not the true gradient."""

    steps: int = 5
    damping: float = 0.5

    def __post_init__(self) -> None:
        if self.steps < 1 or not 0.0 < self.damping <= 1.0:
            raise InputError(f"PhantomBackward needs steps ≥ 1 and damping in (0, 1], got {self}")

    def adjoint(
        self, op: FrozenOperator, d: Tensor, g: Tensor, forward_solver: Solver
    ) -> tuple[Tensor, SolverStats | None]:
        u = d * g
        for _ in range(self.steps):
            u = torch.lerp(u, d * op.WT(u, add=g), self.damping)
        return u, None


@dataclass
class SolveRecord:
    """Statistics of the last forward solve and, once backward has run, of its adjoint solve."""

    forward: SolverStats | None = None
    backward: SolverStats | None = None


@dataclass(frozen=True)
class _Spec:
    operator: TrainableOperator
    activation: Activation
    solver: Solver
    backward: BackwardMethod
    record: SolveRecord = field(default_factory=SolveRecord)
    start: Tensor | None = None


def _forward_solve(spec: _Spec, y: Tensor, tensors: tuple[Tensor, ...]) -> tuple[FrozenOperator, Solution]:
    op = spec.operator.frozen(tensors)
    start = spec.start if spec.start is not None and spec.start.shape == y.shape else None
    sol = spec.solver.solve(op, spec.activation, y.detach(), start)
    spec.record.forward = sol.stats
    return op, sol


class _ImplicitEquilibrium(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, spec: _Spec, y: Tensor, *tensors: Tensor) -> Tensor:
        op, sol = _forward_solve(spec, y, tensors)
        ctx.spec, ctx.op = spec, op
        # σ'(Wz* + y) is all the backward needs of the pre-activation
        ctx.save_for_backward(sol.z, spec.activation.derivative(sol.pre_activation), *tensors)
        return sol.z

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        z, d, *tensors = ctx.saved_tensors
        spec: _Spec = ctx.spec
        with torch.autocast(g.device.type, enabled=False):  # a backward called under autocast: as the forward
            u, stats = spec.backward.adjoint(ctx.op, d, g.to(z.dtype), spec.solver)
            spec.record.backward = stats
            grads = spec.operator.vjp(tensors, z, u, ctx.needs_input_grad[2:])
        return (None, u if ctx.needs_input_grad[1] else None, *grads)


def equilibrium(
    operator: TrainableOperator,
    activation: Activation,
    y: Tensor,
    solver: Solver | None = None,
    backward: BackwardMethod | None = None,
    record: SolveRecord | None = None,
    start: Tensor | None = None,
) -> Tensor:
    """The equilibrium ``z*`` of ``z = σ(Wz + y)``, differentiable in ``y`` and the operator's parameters.

    Gradients come from ``backward`` (exact implicit differentiation by default). Statistics of both
    solves go to ``record`` when one is given. The forward solve starts from ``start`` when it has ``y``'s
    shape (a warm start: the equilibrium does not depend on it), else from zero. Under ``torch.autocast`` the
    equilibrium, its operator and both solves stay in the parameters' precision (the residual and the
    stopping test need it: bfloat16 resolves only ~4e-3); ``y`` is cast up and the result returned in it.
    """
    if torch.is_autocast_enabled(y.device.type):
        with torch.autocast(y.device.type, enabled=False):
            dtype = operator.tensors()[0].dtype
            return equilibrium(operator, activation, y.to(dtype), solver, backward, record, start)
    spec = _Spec(
        operator,
        activation,
        solver or make_solver(default_solver(operator.guarantee_type)),
        backward or ImplicitBackward(),
        record if record is not None else SolveRecord(),
        None if start is None else start.detach(),
    )
    tensors = operator.tensors()
    if not (torch.is_grad_enabled() and (y.requires_grad or any(t.requires_grad for t in tensors))):
        return _forward_solve(spec, y, tensors)[1].z  # nothing to differentiate: no graph, nothing saved
    if issubclass(operator.guarantee_type, Nonexpansive):  # before the solve: no gradient method applies
        raise InputError(
            "no gradient through an operator that is only nonexpansive: its equilibrium need not be unique "
            "(selection with gamma = 1 is for inference only; use torch.no_grad()); train with gamma < 1"
        )
    return _ImplicitEquilibrium.apply(spec, y, *tensors)


def solve(
    operator: TrainableOperator | FrozenOperator,
    activation: Activation,
    y: Tensor,
    solver: Solver | None = None,
    start: Tensor | None = None,
) -> Solution:
    """Solve ``z = σ(Wz + y)`` without autograd, from ``start`` (``None``: zero); returns the
    :class:`~mondeq.solvers.Solution`. ``solver=None``: the default for the operator's guarantee."""
    op = operator.frozen() if isinstance(operator, TrainableOperator) else operator
    with torch.no_grad():
        solver = solver or make_solver(default_solver(type(op.guarantee)))
        return solver.solve(op, activation, y.detach(), start)
