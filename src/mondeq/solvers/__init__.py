"""Solvers for ``z = σ(Wz + y)``: splitting methods and their acceleration (SPEC 2)."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from .anderson import Anderson
from .base import Iteration, Solution, Solver, SolverStats, Splitting, relative_residual, residual_floor
from .douglas_rachford import DouglasRachford
from .forward_backward import ForwardBackward
from .peaceman_rachford import PeacemanRachford

SOLVERS: dict[str, type[Splitting]] = {
    "fb": ForwardBackward,
    "pr": PeacemanRachford,
    "dr": DouglasRachford,
}


def make_solver(name: str, *, anderson: bool = False, **options: Any) -> Solver:
    """A solver by short name (``fb``, ``pr``, ``dr``), optionally Anderson-accelerated.

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
    "DouglasRachford",
    "ForwardBackward",
    "Iteration",
    "PeacemanRachford",
    "Solution",
    "Solver",
    "SolverStats",
    "Splitting",
    "make_solver",
    "relative_residual",
    "residual_floor",
]
