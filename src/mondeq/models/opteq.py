"""OptEq classifiers: fully connected, convolutional and deep (SPEC 4.5; Xie et al., "Optimization induced
equilibrium networks", TPAMI 2023).

``x ↦ C·R(z*) + c`` with ``z* = σ(VᵀVz* + Ux + b)`` the minimiser of ``G(z) = Σᵢ f(zᵢ) + ½zᵀ(I − VᵀV)z − ⟨Ux + b, z⟩``
(:meth:`objective`), ``‖V‖₂ ≤ γ`` (:mod:`mondeq.operators.opteq`), ``R`` the identity (FC) or an average pooling
(conv), and ``σ = prox_f`` optionally composed with a convex prior (:mod:`mondeq.priors`). A deep OptEq has
blocks ``z = (z₁, …, z_L)`` coupled through a block lower-bidiagonal ``V``: the input enters the first block, the
head reads the last. Reference sizes (MNIST, the monDEQ models' parameter counts): FC 784 → 95 → 10 (84,560;
monDEQ 84,313), deep FC (72, 72, 72) (83,170), conv 73 channels (84,471; monDEQ 84,460), deep conv (38, 38, 38)
(83,990); CIFAR-10 conv 106 channels (171,942; monDEQ 172,218).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..activations import Activation, BorderReLU, ReLU, get_activation
from ..implicit import BackwardMethod, solve
from ..layers import EquilibriumLayer
from ..normalization import Normalization
from ..operators.opteq import ConvOptEq, DenseOptEq, objective
from ..priors import Prior, WithPrior, get_prior
from ..solvers import Solver
from ..solvers.base import check_shape
from .certificates import DenseL2Certified, L2Certified, circular_conv_input_norms, dense_input_norms, linear_input_box


class FirstBlockInput(nn.Module):
    """``y = (U x + b, 0, …, 0)``: the input reaches the first block only (``extra`` zero features or channels
    after it)."""

    def __init__(self, input_map: nn.Module, extra: int, spatial: bool) -> None:
        super().__init__()
        self.input_map, self.extra = input_map, extra
        self._pad = (0, 0, 0, 0, 0, extra) if spatial else (0, extra)

    def forward(self, x: Tensor) -> Tensor:
        y = self.input_map(x)
        return F.pad(y, self._pad) if self.extra else y


def _activation(activation: Activation | str, prior: Prior | str | None, prior_weight: float) -> Activation:
    act = get_activation(activation)
    if prior is None:
        return act
    return WithPrior(act, get_prior(prior, prior_weight) if isinstance(prior, str) else prior)


class _OptEqClassifier(nn.Module):
    """What OptEq classifiers share: the objective their equilibrium minimises."""

    mon: EquilibriumLayer
    head: nn.Linear
    input_shape: tuple[int, ...]

    def _prepare(self, x: Tensor) -> Tensor:
        """The input as the equilibrium layer takes it (checked, flattened or padded)."""
        check_shape(x, self.input_shape, "input")
        return x

    def equilibrium_input(self, x: Tensor) -> Tensor:
        """``y = Ux + b`` of the equilibrium for the input ``x``."""
        return self.mon.input_map(self._prepare(x))

    def equilibrium(self, x: Tensor) -> Tensor:
        """``z*`` for the input ``x`` (no gradient), by the layer's evaluation solver (else its solver)."""
        with torch.no_grad():
            solver = self.mon.eval_solver or self.mon.solver
            sol = solve(self.mon.operator, self.mon.activation, self.equilibrium_input(x), solver)
            return self.mon.activation(sol.pre_activation)  # in the domain of f exactly

    def objective(self, x: Tensor, z: Tensor) -> Tensor:
        """Per sample, ``G(z)`` for the input ``x``: :func:`~mondeq.operators.opteq.objective` (``+∞`` outside
        the domain of ``f``); the equilibrium is its unique minimiser."""
        with torch.no_grad():
            return objective(self.mon.operator.frozen(), self.mon.activation, self.equilibrium_input(x), z)


class OptEqFC(DenseL2Certified, _OptEqClassifier):
    """Fully connected OptEq: input flattened, one equilibrium (``hidden`` a tuple: a deep OptEq), a linear head.

    Args:
        input_shape: shape of one input sample (flattened).
        num_classes: outputs of the head.
        hidden: the width, or the widths of the blocks of a deep OptEq (the head reads the last).
        gamma: the bound on ``‖V‖₂``, in ``(0, 1)`` for training.
        prior, prior_weight: a convex prior composed into the activation (:func:`~mondeq.priors.get_prior`).
        activation, solver, backward, eval_solver: see :class:`~mondeq.layers.EquilibriumLayer` (the solver
            defaults to forward–backward).
    """

    blocks = True
    """Its ``hidden`` (or ``channels``) is one count or one per block."""

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        *,
        hidden: int | Sequence[int] = 95,
        gamma: float = 0.95,
        prior: Prior | str | None = None,
        prior_weight: float = 1.0,
        activation: Activation | str = "relu",
        solver: Solver | None = None,
        backward: BackwardMethod | None = None,
        eval_solver: Solver | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        operator = DenseOptEq(hidden, gamma)
        first, last = operator.blocks[0], operator.blocks[-1]
        input_map = FirstBlockInput(nn.Linear(math.prod(self.input_shape), first), operator.n - first, False)
        act = _activation(activation, prior, prior_weight)
        self.mon = EquilibriumLayer(input_map, operator, act, solver, backward, eval_solver)
        self.last = last
        self.head = nn.Linear(last, num_classes)
        self.readout_scale = 1.0  # reading a block of z*

    def _prepare(self, x: Tensor) -> Tensor:
        return super()._prepare(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.readout(self.mon(self._prepare(x))))

    def input_norms(self, normalization: Normalization, differentiable: bool = False) -> tuple[Tensor, Tensor]:
        first = cast(FirstBlockInput, self.mon.input_map)
        return dense_input_norms(cast(nn.Linear, first.input_map).weight, normalization, differentiable)

    def input_box(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        first = cast(FirstBlockInput, self.mon.input_map)
        return linear_input_box(cast(nn.Linear, first.input_map), lo, hi, first.extra)

    def readout(self, z: Tensor) -> Tensor:
        return z[:, -self.last :]


class OptEqConv(L2Certified, _OptEqClassifier):
    """Convolutional OptEq: padded input, one convolutional equilibrium (``channels`` a tuple: a deep OptEq, all
    blocks at one resolution), average pooling of the last block, a linear head. As for the monDEQ conv model,
    grayscale inputs are zero-padded by one pixel and the activation zeroes that border.

    Args:
        input_shape: ``(C, H, W)`` of one input.
        num_classes: outputs of the head.
        channels: channels, or channels per block (``None``: 73 for one input channel, else 106).
        kernel_size: of ``U`` and ``V``.
        pad: zero padding of the input, also the width of the zeroed border (``None``: 1 for one input
            channel, else 0).
        pool: average-pooling size of the head.
        gamma: the bound on ``‖V‖₂``.
        prior, prior_weight: a convex prior composed into the activation.
        activation, solver, backward, eval_solver: see :class:`~mondeq.layers.EquilibriumLayer`;
            ``activation=None`` is ReLU, with the border zeroed when ``pad > 0``.
    """

    blocks = True

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        *,
        channels: int | Sequence[int] | None = None,
        kernel_size: int = 3,
        pad: int | None = None,
        pool: int = 4,
        gamma: float = 0.95,
        prior: Prior | str | None = None,
        prior_weight: float = 1.0,
        activation: Activation | str | None = None,
        solver: Solver | None = None,
        backward: BackwardMethod | None = None,
        eval_solver: Solver | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        c_in, h, w = self.input_shape
        channels = channels or (73 if c_in == 1 else 106)
        self.pad = (1 if c_in == 1 else 0) if pad is None else pad
        size = (h + 2 * self.pad, w + 2 * self.pad)
        if activation is None:
            activation = BorderReLU(self.pad) if self.pad else ReLU()
        operator = ConvOptEq(channels, size, kernel_size, gamma)
        first, self.last = operator.blocks[0], operator.blocks[-1]
        conv = nn.Conv2d(c_in, first, kernel_size, padding=kernel_size // 2, padding_mode="circular")
        input_map = FirstBlockInput(conv, operator.channels - first, True)
        self.mon = EquilibriumLayer(input_map, operator, _activation(activation, prior, prior_weight), solver,
                                    backward, eval_solver)
        self.pool = pool
        self.head = nn.Linear(self.last * math.prod(s // pool for s in size), num_classes)
        self.readout_scale = 1.0 / pool  # p × p average pooling is (1/p) × a map with orthonormal rows

    def _prepare(self, x: Tensor) -> Tensor:
        x = super()._prepare(x)
        return F.pad(x, (self.pad,) * 4) if self.pad else x

    def forward(self, x: Tensor) -> Tensor:
        z = self.mon(self._prepare(x))
        return self.head(F.avg_pool2d(z[:, -self.last :], self.pool).flatten(1))

    def input_norms(self, normalization: Normalization, differentiable: bool = False) -> tuple[Tensor, Tensor]:
        """Zero padding of the input is an isometry, the convolution is circular."""
        conv = cast(nn.Conv2d, cast(FirstBlockInput, self.mon.input_map).input_map)
        return circular_conv_input_norms(conv.weight, cast(ConvOptEq, self.mon.operator).size,
                                         math.prod(self.input_shape), normalization, differentiable)
