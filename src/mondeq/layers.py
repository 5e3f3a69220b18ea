"""The equilibrium layer: ``z* = σ(Wz* + U(x))`` as a drop-in ``nn.Module``."""

from __future__ import annotations

from torch import Tensor, nn

from .activations import Activation, get_activation
from .implicit import BackwardMethod, ImplicitBackward, SolveRecord, equilibrium
from .operators.base import TrainableOperator
from .solvers import Solver, default_solver, make_solver


class EquilibriumLayer(nn.Module):
    """An implicit layer that is well posed for every parameter value.

    Args:
        input_map: ``U`` (with its bias ``b``), mapping the input to ``y = Ux + b`` of the operator's shape.
        operator: the trainable ``W`` with its guarantee.
        activation: a proximal activation or its registry name.
        solver: the forward solver (also the adjoint solver of the exact backward by default; ``None``: the
            family's default, Peaceman–Rachford for ℓ2 operators and the average iteration for NEMON).
        backward: the gradient method (exact implicit differentiation by default).
        eval_solver: a solver for evaluation mode (``None``: ``solver``).

    After each call :attr:`last_solve` holds the forward statistics, and the backward ones once
    ``backward()`` has run; :attr:`last_interval_solve` those of the embedded (interval) equilibrium that
    certified training solved after the call (:func:`~mondeq.robustness.interval.interval_equilibrium`), or
    ``None``. With :attr:`warm_start` set, each solve starts from the previous call's
    equilibrium when the batch has the same shape (an attack's steps: the equilibrium is the same, the solve
    shorter).
    """

    def __init__(
        self,
        input_map: nn.Module,
        operator: TrainableOperator,
        activation: Activation | str = "relu",
        solver: Solver | None = None,
        backward: BackwardMethod | None = None,
        eval_solver: Solver | None = None,
    ) -> None:
        super().__init__()
        self.input_map = input_map
        self.operator = operator
        self.activation = get_activation(activation)
        self.solver = solver or make_solver(default_solver(operator.guarantee_type))
        self.backward_method = backward or ImplicitBackward()
        self.eval_solver = eval_solver
        self.last_solve: SolveRecord | None = None
        self.last_interval_solve: SolveRecord | None = None
        self.warm_start = False
        self._last: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        y = self.input_map(x)
        solver = self.solver if self.training or self.eval_solver is None else self.eval_solver
        self.last_solve = record = SolveRecord()
        self.last_interval_solve = None
        start = self._last if self.warm_start else None
        z = equilibrium(self.operator, self.activation, y, solver, self.backward_method, record, start)
        self._last = z.detach() if self.warm_start else None
        return z

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}, solver={self.solver!r}, backward={self.backward_method!r}"
