"""Multi-tier (multi-scale) convolutional monDEQ classifier (SPEC 4.3; Winston & Kolter 2020, section 5).

The input is zero-padded by ``2^{L−1}`` pixels per side (so every tier's size is an integer and the last
tier keeps a margin, as in the paper's geometry), mapped by a 3 × 3 circular convolution into the first
tier only, and the linear head reads the whole last tier. Reference sizes: MNIST ``(16, 32, 32)``
(81,394 parameters), CIFAR-10/SVHN ``(16, 32, 60)`` (170,194), large CIFAR-10 ``(64, 128, 128)``
(1,014,546).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from ..activations import Activation
from ..implicit import BackwardMethod
from ..layers import EquilibriumLayer
from ..normalization import Normalization
from ..operators.multitier import MultiTierMonotone
from ..solvers import Solver
from ..solvers.base import check_shape
from .certificates import L2Certified, circular_conv_input_norms


class FirstTierInput(nn.Module):
    """``y = (U x + b, 0, …, 0)``: the input reaches the first tier only."""

    def __init__(self, conv: nn.Conv2d, total: int) -> None:
        super().__init__()
        self.conv, self.total = conv, total

    def forward(self, x: Tensor) -> Tensor:
        first = self.conv(x).flatten(1)
        return F.pad(first, (0, self.total - first.shape[1]))


class MultiTierMonDEQ(L2Certified, nn.Module):
    """Multi-tier monDEQ: padded input, a multi-scale convolutional equilibrium, a linear head.

    Args:
        input_shape: ``(C, H, W)`` of one input.
        num_classes: outputs of the head.
        channels: channels per tier (``None``: ``(16, 32, 32)`` for one input channel, else
            ``(16, 32, 60)``).
        kernel_size: of every convolution.
        pad: zero padding of the input per side (``None``: ``2^{L−1}``).
        m: strong monotonicity of ``I − W``.
        activation, solver, backward, eval_solver: see :class:`~mondeq.layers.EquilibriumLayer`.
    """

    tiered = True
    """Its ``channels`` are one count per tier."""

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        *,
        channels: Sequence[int] | None = None,
        kernel_size: int = 3,
        pad: int | None = None,
        m: float = 1.0,
        activation: Activation | str = "relu",
        solver: Solver | None = None,
        backward: BackwardMethod | None = None,
        eval_solver: Solver | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        c_in, h, w = self.input_shape
        channels = tuple(channels or ((16, 32, 32) if c_in == 1 else (16, 32, 60)))
        levels = len(channels)
        self.pad = 2 ** (levels - 1) if pad is None else pad
        size = (h + 2 * self.pad, w + 2 * self.pad)
        operator = MultiTierMonotone(channels, size, kernel_size, m)
        conv = nn.Conv2d(c_in, channels[0], kernel_size, padding=kernel_size // 2, padding_mode="circular")
        self.mon = EquilibriumLayer(
            FirstTierInput(conv, operator.shape[0]), operator, activation, solver, backward, eval_solver
        )
        self.last = channels[-1] * math.prod(s >> (levels - 1) for s in size)
        self.head = nn.Linear(self.last, num_classes)
        self.readout_scale = 1.0  # reading the last tier

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, self.input_shape, "input")
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        z = self.mon(x)
        return self.head(z[:, -self.last :])

    def input_norms(self, normalization: Normalization, differentiable: bool = False) -> tuple[Tensor, Tensor]:
        """Of the input convolution into the first tier."""
        first, operator = cast(FirstTierInput, self.mon.input_map), cast(MultiTierMonotone, self.mon.operator)
        return circular_conv_input_norms(first.conv.weight, operator.size,
                                         math.prod(self.input_shape), normalization, differentiable)
