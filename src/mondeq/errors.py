"""Exceptions and warnings raised by mondeq."""

from __future__ import annotations


class MondeqError(Exception):
    """Base class of every error mondeq raises on purpose (a user mistake or a failed guarantee)."""


class InputError(MondeqError, ValueError):
    """An input the library cannot use: wrong shape, NaN or Inf, unknown name."""


class UnsafeStepError(MondeqError, ValueError):
    """A step size for which the solver's convergence guarantee does not hold."""


class UnprovenSolverError(MondeqError, ValueError):
    """A solver asked to run on an operator whose guarantee it has no convergence proof for."""


class ConvergenceError(MondeqError, RuntimeError):
    """A solve that did not reach its tolerance (strict mode) or produced non-finite values."""


class ConvergenceWarning(UserWarning):
    """A solve that stopped at ``max_iter`` before reaching its tolerance."""


class CertificateError(MondeqError, RuntimeError):
    """A certificate contradicted: an attack changed the prediction of a point certified at that radius."""
