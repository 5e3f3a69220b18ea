"""mondeq: implicit-depth networks that are well posed by construction.

Monotone operator equilibrium networks (Winston & Kolter, NeurIPS 2020): ``z* = σ(Wz* + Ux + b)`` with
``I − W`` strongly monotone for every parameter value, solved by operator splitting with guaranteed
convergence and differentiated implicitly; and their ℓ∞ variant, NEMON (Jafarpour, Davydov, Proskurnikov &
Bullo, NeurIPS 2021), with ``μ∞,Δ(W) < 1``, solved by the average iteration. Each operator carries its
guarantee, and each solver runs only on the guarantees it has a proof for.
"""

from .activations import Activation, BorderReLU, Diagonal, Identity, LeakyReLU, ReLU, get_activation
from .errors import (
    ConvergenceError,
    ConvergenceWarning,
    InputError,
    MondeqError,
    UnprovenSolverError,
    UnsafeStepError,
)
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
from .models import MODELS, ConvMonDEQ, FCMonDEQ, MultiTierMonDEQ, NemonConv, NemonFC, build_model
from .operators import (
    ConvMonotone,
    ConvNemon,
    DenseMonotone,
    DenseNemon,
    FrozenOperator,
    MonotoneOperator,
    MultiTierMonotone,
    TrainableOperator,
)
from .operators.guarantees import Guarantee, L1Contractive, LinfContractive, StronglyMonotone, Symmetric
from .solvers import (
    Anderson,
    Average,
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
    "Average",
    "BackwardMethod",
    "BorderReLU",
    "ConvMonDEQ",
    "ConvMonotone",
    "ConvNemon",
    "ConvergenceError",
    "ConvergenceWarning",
    "DenseMonotone",
    "DenseNemon",
    "Diagonal",
    "DouglasRachford",
    "EquilibriumLayer",
    "FCMonDEQ",
    "ForwardBackward",
    "FrozenOperator",
    "Guarantee",
    "Identity",
    "ImplicitBackward",
    "InputError",
    "JacobianFreeBackward",
    "L1Contractive",
    "LeakyReLU",
    "LinfContractive",
    "MondeqError",
    "MonotoneOperator",
    "MultiTierMonDEQ",
    "MultiTierMonotone",
    "NemonConv",
    "NemonFC",
    "PeacemanRachford",
    "PhantomBackward",
    "ReLU",
    "Solution",
    "SolveRecord",
    "Solver",
    "SolverStats",
    "StronglyMonotone",
    "Symmetric",
    "TrainableOperator",
    "UnprovenSolverError",
    "UnsafeStepError",
    "build_model",
    "equilibrium",
    "get_activation",
    "make_solver",
    "solve",
]
