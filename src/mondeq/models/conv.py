"""Single-convolution monDEQ classifier (SPEC 4.2; Winston & Kolter 2020, section 5).

``x ↦ C·pool(z*) + c`` with ``z* = σ(Wz* + Ux + b)``, ``U`` a 3 × 3 circular convolution and ``W`` a
:class:`~mondeq.operators.ConvMonotone`. As in the paper, grayscale 28 × 28 inputs are zero-padded to
30 × 30 and the activation zeroes a one-pixel border (removing the circular wrap-around); the head
average-pools 4 × 4. Reference sizes: MNIST 56 channels (84,460 parameters), CIFAR-10/SVHN 81 channels
(172,218), the large CIFAR-10 model 200 channels (853,612).
"""

from __future__ import annotations

import math
from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from ..activations import Activation, BorderReLU, ReLU
from ..implicit import BackwardMethod
from ..layers import EquilibriumLayer
from ..normalization import Normalization
from ..operators.conv import ConvMonotone
from ..solvers import Solver
from ..solvers.base import check_shape
from .certificates import L2Certified, circular_conv_input_norms


class ConvMonDEQ(L2Certified, nn.Module):
    """Single-convolution monDEQ: padded input, one convolutional equilibrium, pooling, a linear head.

    Args:
        input_shape: ``(C, H, W)`` of one input.
        num_classes: outputs of the head.
        channels: channels of the equilibrium (``None``: 56 for one input channel, else 81).
        kernel_size: of ``A`` and ``B``.
        pad: zero padding of the input, also the width of the zeroed border (``None``: 1 for one input
            channel, else 0).
        pool: average-pooling size of the head.
        m: strong monotonicity of ``I − W``.
        activation, solver, backward, eval_solver: see :class:`~mondeq.layers.EquilibriumLayer`;
            ``activation=None`` is ReLU, with the border zeroed when ``pad > 0``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        *,
        channels: int | None = None,
        kernel_size: int = 3,
        pad: int | None = None,
        pool: int = 4,
        m: float = 1.0,
        activation: Activation | str | None = None,
        solver: Solver | None = None,
        backward: BackwardMethod | None = None,
        eval_solver: Solver | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        c_in, h, w = self.input_shape
        channels = channels or (56 if c_in == 1 else 81)
        self.pad = (1 if c_in == 1 else 0) if pad is None else pad
        size = (h + 2 * self.pad, w + 2 * self.pad)
        if activation is None:
            activation = BorderReLU(self.pad) if self.pad else ReLU()
        self.mon = EquilibriumLayer(
            nn.Conv2d(c_in, channels, kernel_size, padding=kernel_size // 2, padding_mode="circular"),
            ConvMonotone(channels, size, kernel_size, m),
            activation,
            solver,
            backward,
            eval_solver,
        )
        self.pool = pool
        pooled = math.prod(s // pool for s in size)
        self.head = nn.Linear(channels * pooled, num_classes)
        self.readout_scale = 1.0 / pool  # p × p average pooling is (1/p) × a map with orthonormal rows

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, self.input_shape, "input")
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        z = self.mon(x)
        return self.head(F.avg_pool2d(z, self.pool).flatten(1))

    def input_norms(self, normalization: Normalization, differentiable: bool = False) -> tuple[Tensor, Tensor]:
        """Zero padding of the input is an isometry, the convolution is circular."""
        conv, operator = cast(nn.Conv2d, self.mon.input_map), cast(ConvMonotone, self.mon.operator)
        return circular_conv_input_norms(conv.weight, operator.size,
                                         math.prod(self.input_shape), normalization, differentiable)
