"""Solvers for ``z = σ(Wz + y)``: splitting methods and their acceleration (SPEC 2)."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..operators.guarantees import Guarantee, Nonexpansive, StronglyMonotone
from .anderson import Anderson
from .average import Average
from .base import Iteration, Solution, Solver, SolverStats, Splitting, relative_residual, residual_floor
from .douglas_rachford import DouglasRachford
from .forward_backward import ForwardBackward
from .halpern import Halpern
from .peaceman_rachford import PeacemanRachford

SOLVERS: dict[str, type[Splitting]] = {
    "fb": ForwardBackward,
    "pr": PeacemanRachford,
    "dr": DouglasRachford,
    "avg": Average,
    "halpern": Halpern,
}


def default_solver(guarantee: type[Guarantee]) -> str:
    """The short name of a family's default solver: Peaceman–Rachford for ℓ2 strongly monotone operators (monDEQ,
    OptEq: on OptEq it takes about half the iterations of forward–backward, the plain iteration's
    proximal-gradient form, at the same cost per iteration), the anchored iteration for nonexpansive ones (OptEq
    with ``γ = 1``), the average iteration for the ℓ∞/ℓ1-contractive ones (NEMON)."""
    if issubclass(guarantee, StronglyMonotone):
        return "pr"
    return "halpern" if issubclass(guarantee, Nonexpansive) else "avg"


def make_solver(name: str, *, anderson: bool = False, **options: Any) -> Solver:
    """A solver by short name (``fb``, ``pr``, ``dr``, ``avg``, ``halpern``), optionally Anderson-accelerated.

    Unknown names and options raise :class:`~mondeq.errors.InputError`.
    """
    try:
        cls = SOLVERS[name]
    except KeyError:
        raise InputError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}") from None
    try:
        base = cls(**options)
    except TypeError as e:
        raise InputError(f"solver {name!r}: {e}") from None
    return Anderson(base) if anderson else base


__all__ = [
    "SOLVERS",
    "Anderson",
    "Average",
    "DouglasRachford",
    "ForwardBackward",
    "Halpern",
    "Iteration",
    "PeacemanRachford",
    "Solution",
    "Solver",
    "SolverStats",
    "Splitting",
    "default_solver",
    "make_solver",
    "relative_residual",
    "residual_floor",
]
