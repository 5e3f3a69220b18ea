"""mondeq: implicit-depth networks that are well posed by construction.

Monotone operator equilibrium networks (Winston & Kolter, NeurIPS 2020): ``z* = σ(Wz* + Ux + b)`` with
``I − W`` strongly monotone for every parameter value, solved by operator splitting with guaranteed
convergence and differentiated implicitly.
"""

from .activations import Activation, BorderReLU, Diagonal, LeakyReLU, ReLU, get_activation
from .errors import ConvergenceError, ConvergenceWarning, InputError, MondeqError, UnsafeStepError
from .implicit import (
    BackwardMethod,
    ImplicitBackward,
    JacobianFreeBackward,
    PhantomBackward,
    SolveRecord,
    equilibrium,
    solve,
)
from .layers import EquilibriumLayer
from .models import MODELS, ConvMonDEQ, FCMonDEQ, MultiTierMonDEQ, build_model
from .operators import ConvMonotone, DenseMonotone, FrozenOperator, MonotoneOperator, MultiTierMonotone
from .solvers import (
    Anderson,
    DouglasRachford,
    ForwardBackward,
    PeacemanRachford,
    Solution,
    Solver,
    SolverStats,
    make_solver,
)

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "Activation",
    "Anderson",
    "BackwardMethod",
    "BorderReLU",
    "ConvMonDEQ",
    "ConvMonotone",
    "ConvergenceError",
    "ConvergenceWarning",
    "DenseMonotone",
    "Diagonal",
    "DouglasRachford",
    "EquilibriumLayer",
    "FCMonDEQ",
    "ForwardBackward",
    "FrozenOperator",
    "ImplicitBackward",
    "InputError",
    "JacobianFreeBackward",
    "LeakyReLU",
    "MondeqError",
    "MonotoneOperator",
    "MultiTierMonDEQ",
    "MultiTierMonotone",
    "PeacemanRachford",
    "PhantomBackward",
    "ReLU",
    "Solution",
    "SolveRecord",
    "Solver",
    "SolverStats",
    "UnsafeStepError",
    "build_model",
    "equilibrium",
    "get_activation",
    "make_solver",
    "solve",
]
