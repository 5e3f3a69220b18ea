"""mondeq: implicit-depth networks that are well posed by construction.

Monotone operator equilibrium networks (Winston & Kolter, NeurIPS 2020): ``z* = σ(Wz* + Ux + b)`` with
``I − W`` strongly monotone for every parameter value, solved by operator splitting with guaranteed
convergence and differentiated implicitly; and their ℓ∞ variant, NEMON (Jafarpour, Davydov, Proskurnikov &
Bullo, NeurIPS 2021), with ``μ∞,Δ(W) < 1``, solved by the average iteration. Each operator carries its
guarantee, and each solver runs only on the guarantees it has a proof for.
"""

from typing import TYPE_CHECKING, Any

from .activations import Activation, BorderReLU, Diagonal, Identity, LeakyReLU, ReLU, get_activation
from .errors import (
    CertificateError,
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
from .models import (
    MODELS,
    ComposedL2,
    ComposedNemon,
    ConvMonDEQ,
    FCMonDEQ,
    MultiTierMonDEQ,
    NemonConv,
    NemonFC,
    OptEqConv,
    OptEqFC,
    build_model,
    compose,
)
from .normalization import Normalization
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
from .operators.guarantees import (
    Guarantee,
    L1Contractive,
    LinfContractive,
    Nonexpansive,
    StronglyMonotone,
    Symmetric,
)
from .operators.opteq import ConvOptEq, DenseOptEq
from .priors import L1, Box, NonNegative, Prior, WithPrior
from .solvers import (
    Anderson,
    Average,
    DouglasRachford,
    ForwardBackward,
    Halpern,
    PeacemanRachford,
    Solution,
    Solver,
    SolverStats,
    make_solver,
)

__version__ = "0.1.0"

__all__ = [
    "L1",
    "MODELS",
    "Activation",
    "Anderson",
    "Average",
    "BackwardMethod",
    "BorderReLU",
    "Box",
    "CertificateError",
    "ComposedL2",
    "ComposedNemon",
    "ConvMonDEQ",
    "ConvMonotone",
    "ConvNemon",
    "ConvOptEq",
    "ConvergenceError",
    "ConvergenceWarning",
    "DenseMonotone",
    "DenseNemon",
    "DenseOptEq",
    "Diagonal",
    "DouglasRachford",
    "EquilibriumLayer",
    "FCMonDEQ",
    "ForwardBackward",
    "FrozenOperator",
    "Guarantee",
    "Halpern",
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
    "NonNegative",
    "Nonexpansive",
    "Normalization",
    "OptEqConv",
    "OptEqFC",
    "PeacemanRachford",
    "PhantomBackward",
    "Prior",
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
    "WithPrior",
    "build_model",
    "compose",
    "equilibrium",
    "get_activation",
    "make_solver",
    "solve",
]

_APPLICATION = ("bench", "data", "presets", "training")
"""Submodules of the application layer, imported on first use (``mondeq.training.fit`` after ``import mondeq``)
so that importing the library does not load the data sets' readers, the training loop or matplotlib."""

if TYPE_CHECKING:
    from . import bench as bench
    from . import data as data
    from . import presets as presets
    from . import training as training


def __getattr__(name: str) -> Any:
    if name in _APPLICATION:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_APPLICATION})
