"""Fully connected monDEQ classifier (SPEC 4.1; Winston & Kolter 2020, section 5).

``x ↦ C z* + c`` with ``z* = σ(Wz* + Ux + b)``. The MNIST reference size (784 → 87 → 10) has 84,313
parameters.
"""

from __future__ import annotations

import math
from typing import cast

from torch import Tensor, nn

from ..activations import Activation
from ..implicit import BackwardMethod
from ..layers import EquilibriumLayer
from ..normalization import Normalization
from ..operators.dense import DenseMonotone
from ..solvers import Solver
from ..solvers.base import check_shape
from .certificates import DenseL2Certified, dense_input_norms, linear_input_box


class FCMonDEQ(DenseL2Certified, nn.Module):
    """Fully connected monDEQ: input flattened, one equilibrium layer, a linear head.

    Args:
        input_shape: shape of one input sample (flattened to ``prod(input_shape)`` features).
        num_classes: outputs of the linear head.
        hidden: width ``n`` of the equilibrium.
        m: strong monotonicity of ``I − W``.
        normalized: the normalised parameterization of :class:`~mondeq.operators.DenseMonotone`.
        activation, solver, backward, eval_solver: see :class:`~mondeq.layers.EquilibriumLayer`.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        *,
        hidden: int = 87,
        m: float = 1.0,
        normalized: bool = False,
        activation: Activation | str = "relu",
        solver: Solver | None = None,
        backward: BackwardMethod | None = None,
        eval_solver: Solver | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        features = math.prod(self.input_shape)
        self.mon = EquilibriumLayer(
            nn.Linear(features, hidden),
            DenseMonotone(hidden, m, normalized=normalized),
            activation,
            solver,
            backward,
            eval_solver,
        )
        self.head = nn.Linear(hidden, num_classes)
        self.readout_scale = 1.0  # ‖readout‖ between z* and the head's input (SPEC 5)

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, self.input_shape, "input")
        return self.head(self.mon(x.flatten(1)))

    def input_norms(self, normalization: Normalization, differentiable: bool = False) -> tuple[Tensor, Tensor]:
        return dense_input_norms(cast(nn.Linear, self.mon.input_map).weight, normalization, differentiable)

    def input_box(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        return linear_input_box(cast(nn.Linear, self.mon.input_map), lo, hi)

    def readout(self, z: Tensor) -> Tensor:
        return z
