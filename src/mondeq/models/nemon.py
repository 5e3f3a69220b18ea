"""NEMON classifiers: fully connected and single convolution (SPEC 4.4; Jafarpour et al. 2021, section 6).

``x ↦ C·R(z*) + c`` with ``z* = σ(Wz* + Ux + b)``, ``W`` ℓ∞,Δ-contractive with ``μ∞,Δ(W) ≤ γ``, and ``R``
the identity (FC) or a ``p × p`` average pooling (conv). The logits are ℓ∞ → ℓ∞ Lipschitz with

    ‖y(x₁) − y(x₂)‖∞ ≤ ‖CRΔ⁻¹‖∞ · ‖ΔU‖∞ / (1 − μ∞,Δ(W)) · ‖x₁ − x₂‖∞

and the difference ``yₖ − yₗ`` with ``‖(Cₖ − Cₗ)RΔ⁻¹‖₁`` in place of ``‖CRΔ⁻¹‖∞``. (Proof: ``e = z*(x₁) − z*(x₂)``
solves ``(I − DW)e = DUδx`` with ``D`` diagonal in ``[0, 1]``; in the row where ``|Δe|`` is largest,
``‖Δe‖∞(1 − μᵢ) ≤ ‖ΔUδx‖∞`` because ``1/dᵢ ≥ 1``. It holds for ``μ < 0`` too.) A ``p × p`` average pooling
has non-negative entries ``1/p²`` and each output averages ``p²`` inputs, so ``‖(Cₖ − Cₗ)RΔ⁻¹‖₁`` is the sum over
the pooled head weights of ``|Cₖ − Cₗ|/Δ`` of their channel, exactly. Bounds are stated on the pixel scale:
the input normalisation ``(x − mean)/std`` divides ``U``'s columns by their channel's ``std``.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from typing import cast

import torch
from torch import Tensor, nn

from ..activations import Activation
from ..implicit import BackwardMethod
from ..layers import EquilibriumLayer
from ..normalization import Normalization
from ..operators.nemon import ConvNemon, DenseNemon
from ..robustness.interval import abs_linear, enclosed_margins, head_margins, interval_equilibrium, linear_box
from ..robustness.lipschitz import LipschitzBound, check_norm
from ..solvers import Solver
from ..solvers.base import check_shape


def logit_bound(scaled: Tensor, state: Tensor, p: float) -> Tensor:
    """``‖CRΔ⁻¹‖∞`` (ℓp over the rows' sums for a finite ``p``) times the bound of ``z*``."""
    return torch.linalg.vector_norm(scaled.abs().sum(dim=1), ord=p) * state


def nemon_lipschitz(
    model: nn.Module, norm: str, normalization: Normalization, differentiable: bool = False
) -> LipschitzBound:
    """The ℓ∞ bounds of a NEMON classifier's ``linf_bound``, also for ``norm="2"`` (``‖δ‖∞ ≤ ‖δ‖₂``). Without
    ``differentiable`` they are computed in float64 from the stored parameters, with ``μ`` the measure of the
    matrix the solver applies (its frozen guarantee's, round-off included) where that is larger."""
    check_norm(norm)
    if differentiable:
        total, pairs, state = model.linf_bound(normalization)  # type: ignore[operator]
        return LipschitzBound(float(total.detach()), pairs, float(state.detach()))
    twin = copy.deepcopy(model).double()
    total, pairs, state = (t.detach() for t in twin.linf_bound(normalization))  # type: ignore[operator]
    exact = float(twin.mon.operator.measure().detach())  # type: ignore[union-attr,operator]
    applied = model.mon.operator.frozen().guarantee.mu  # type: ignore[union-attr,operator]
    widen = (1.0 - exact) / (1.0 - max(applied, exact))
    return LipschitzBound(float(total) * widen, pairs * widen, float(state) * widen)


class _NemonClassifier(nn.Module, ABC):
    """What NEMON classifiers share: the ℓ∞ Lipschitz bounds of their logits and their interval bounds."""

    mon: EquilibriumLayer
    head: nn.Linear
    readout_terms = 1
    """Inputs summed by each output of the readout (its rounding bound)."""

    @abstractmethod
    def readout(self, z: Tensor) -> Tensor:
        """``R(z)``: the head's input (monotone and linear: identity or average pooling)."""

    def lipschitz(self, norm: str, normalization: Normalization, differentiable: bool = False) -> LipschitzBound:
        """See :func:`nemon_lipschitz`."""
        return nemon_lipschitz(self, norm, normalization, differentiable)

    def interval_support(self) -> str | None:
        return None

    def interval(self, lo: Tensor, hi: Tensor) -> Tensor:
        """Sound lower bounds ``(B, K, K)`` of every logit difference over inputs in ``[lo, hi]``, from the
        enclosure of the mixed-monotone embedding (:mod:`mondeq.robustness.interval`; compute in float64)."""
        return enclosed_margins(self.mon.operator, self.mon.activation, *self.input_box(lo, hi), self.readout,
                                self.readout_terms, self.head)

    def interval_training(self, lo: Tensor, hi: Tensor, labels: Tensor) -> Tensor:
        """Upper bounds of ``yₖ − y_label`` over ``[lo, hi]`` (``0`` at the label), differentiable through the
        embedded equilibrium solved to the layer's tolerance: the interval-bound loss's (Gowal et al. 2018)."""
        z_lo, z_hi = interval_equilibrium(self.mon, *self.input_box(lo, hi))
        return -head_margins(self.head, self.readout(z_lo), self.readout(z_hi), labels)

    def input_box(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """The box of ``y = Ux + b`` over inputs ``x ∈ [lo, hi]`` (normalised scale), rounding included."""
        apply, apply_abs, terms = abs_linear(self.mon.input_map)
        return linear_box(apply, apply_abs, terms, self._prepare(lo), self._prepare(hi))

    def _prepare(self, x: Tensor) -> Tensor:
        return x

    @abstractmethod
    def _input_rows(self, inverse_std: Tensor) -> Tensor:
        """Per hidden unit (FC) or channel (conv): the ℓ1 norm of ``U``'s row on the pixel scale."""

    @abstractmethod
    def _head_columns(self) -> tuple[Tensor, Tensor]:
        """The head's weights as ``(classes, k)`` and, for each of the ``k`` columns, the index of the unit or
        channel of ``Δ`` it reads."""

    def _linf_parts(self, normalization: Normalization, p: float) -> tuple[Tensor, Tensor]:
        """The head's columns divided by their ``Δ`` entries, and the bound of ``z*`` in ``‖Δ·‖∞``."""
        op = self.mon.operator
        assert isinstance(op, (DenseNemon, ConvNemon))
        weights = torch.exp(op.delta)
        rows = weights * self._input_rows(normalization.inverse_std(weights))
        state = torch.linalg.vector_norm(rows, ord=p) / (1.0 - op.measure())
        head, index = self._head_columns()
        return head / weights[index], state

    def linf_lipschitz(self, normalization: Normalization, p: float = math.inf) -> Tensor:
        """The ℓ∞ bound ``L`` of the logits alone (see :meth:`linf_bound`), without the pair bounds."""
        return logit_bound(*self._linf_parts(normalization, p), p)

    def linf_bound(self, normalization: Normalization, p: float = math.inf) -> tuple[Tensor, Tensor, Tensor]:
        """``(L, Lₖₗ, ‖ΔU‖∞/(1 − μ))``: ℓ∞ bounds of the logits, of every logit difference, and of ``z*`` in
        ``‖Δ·‖∞``, for inputs on the pixel scale under the ``normalization``; differentiable in the parameters,
        with ``μ`` the exact-arithmetic measure (:meth:`DenseNemon.measure`). With a finite ``p`` the maxima
        over rows are replaced by ℓp norms of the rows' sums (larger: still bounds, and every row, not only the
        largest, gets a gradient; the regulariser's)."""
        scaled, state = self._linf_parts(normalization, p)
        pairs = (scaled[:, None, :] - scaled[None, :, :]).abs().sum(dim=2) * state
        return logit_bound(scaled, state, p), pairs, state


class NemonFC(_NemonClassifier):
    """Fully connected NEMON: input flattened, one ℓ∞-contractive equilibrium, a linear head (MNIST: 784 → 100
    → 10 as in the original code).

    Args:
        input_shape: shape of one input sample (flattened).
        num_classes: outputs of the linear head.
        hidden: width of the equilibrium.
        gamma: the bound ``γ < 1`` on ``μ∞,Δ(W)``.
        activation, solver, backward, eval_solver: see :class:`~mondeq.layers.EquilibriumLayer` (the solver
            defaults to the average iteration).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        *,
        hidden: int = 100,
        gamma: float = 0.0,
        activation: Activation | str = "relu",
        solver: Solver | None = None,
        backward: BackwardMethod | None = None,
        eval_solver: Solver | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        features = math.prod(self.input_shape)
        self.mon = EquilibriumLayer(
            nn.Linear(features, hidden), DenseNemon(hidden, gamma), activation, solver, backward, eval_solver
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, self.input_shape, "input")
        return self.head(self.mon(self._prepare(x)))

    def readout(self, z: Tensor) -> Tensor:
        return z

    def _prepare(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def _input_rows(self, inverse_std: Tensor) -> Tensor:
        # features in channel-first order: each channel's block has its std
        u = cast(nn.Linear, self.mon.input_map).weight
        return (u.abs() * inverse_std.repeat_interleave(u.shape[1] // inverse_std.numel())).sum(dim=1)

    def _head_columns(self) -> tuple[Tensor, Tensor]:
        w = self.head.weight
        return w, torch.arange(w.shape[1], device=w.device)


class NemonConv(_NemonClassifier):
    """Single-convolution NEMON: a zero-padded convolution ``U``, one ℓ∞-contractive convolutional equilibrium
    with one weight per channel, ``p × p`` average pooling and a linear head.

    Args:
        input_shape: ``(C, H, W)`` of one input.
        num_classes: outputs of the head.
        channels: channels of the equilibrium (``None``: 64 for one input channel, as the original MNIST
            model, else 81).
        kernel_size: of ``U`` and of ``W``'s convolution (odd).
        pool: average-pooling size of the head.
        gamma: the bound ``γ < 1`` on ``μ∞,Δ(W)``.
        activation, solver, backward, eval_solver: see :class:`~mondeq.layers.EquilibriumLayer`.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        *,
        channels: int | None = None,
        kernel_size: int = 3,
        pool: int = 4,
        gamma: float = 0.0,
        activation: Activation | str = "relu",
        solver: Solver | None = None,
        backward: BackwardMethod | None = None,
        eval_solver: Solver | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        c_in, h, w = self.input_shape
        channels = channels or (64 if c_in == 1 else 81)
        self.mon = EquilibriumLayer(
            nn.Conv2d(c_in, channels, kernel_size, padding=kernel_size // 2),
            ConvNemon(channels, (h, w), kernel_size, gamma),
            activation,
            solver,
            backward,
            eval_solver,
        )
        self.pool = pool
        self.readout_terms = pool * pool
        self.pooled = (h // pool, w // pool)
        self.head = nn.Linear(channels * math.prod(self.pooled), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, self.input_shape, "input")
        return self.head(self.readout(self.mon(x)))

    def readout(self, z: Tensor) -> Tensor:
        return torch.nn.functional.avg_pool2d(z, self.pool).flatten(1)

    def _input_rows(self, inverse_std: Tensor) -> Tensor:
        # (channels, c_in, k, k); zero padding: interior rows have every tap
        u = cast(nn.Conv2d, self.mon.input_map).weight
        return (u.abs().sum(dim=(2, 3)) * inverse_std.expand(u.shape[1])).sum(dim=1)

    def _head_columns(self) -> tuple[Tensor, Tensor]:
        w = self.head.weight
        index = torch.arange(self.mon.operator.shape[0], device=w.device).repeat_interleave(math.prod(self.pooled))
        return w, index
