"""ℓ∞-weighted operators of the non-Euclidean monotone operator network (NEMON, SPEC 4.4; Jafarpour,
Davydov, Proskurnikov & Bullo 2021, "Robust implicit networks via non-Euclidean contractions").

With ``Δ = diag(e^δ)`` and a free ``T``, the parameterization

    ΔWΔ⁻¹ = M = γI + T − diag(|T|𝟙)

gives every row of ``M`` the measure ``Mᵢᵢ + Σ_{j≠i}|Mᵢⱼ| = γ + Tᵢᵢ − |Tᵢᵢ| ≤ γ``, so ``μ∞,Δ(W) ≤ γ < 1`` for
every parameter value, and every ``W`` with ``μ∞,Δ(W) ≤ γ`` is reachable. The frozen operator reports the
measure of the matrix it actually applies (computed in float64 from the stored values), not ``γ``.

For a convolution ``T`` (kernel ``K``, ``c`` channels, one weight ``δ`` per channel) the row of output channel
``o`` at a pixel holds the taps ``K[o, c, kh, kw]`` of every input channel; the centre tap of ``K[o, o]`` is the
diagonal, and ``diag(|T|𝟙)`` subtracts ``Sₒ = Σ_{c,kh,kw}|K[o, c, kh, kw]|``. With zero padding a border pixel's
row has fewer taps than an interior one, so its measure is only smaller: the bound is that of interior rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .base import FrozenOperator, TrainableOperator
from .dense import DenseFrozenOperator
from .guarantees import Guarantee, LinfContractive

_EPS64 = torch.finfo(torch.float64).eps


def _check_gamma(gamma: float) -> float:
    if not gamma < 1.0 or not math.isfinite(gamma):
        raise InputError(f"the ℓ∞ measure bound gamma must be < 1, got {gamma}")
    return float(gamma)


def _guarantee(rows: Tensor, magnitude: Tensor, terms: int, diagonal: Tensor, weights: Tensor) -> LinfContractive:
    """The guarantee from per-row measures and diagonal entries computed in float64, each row widened by the
    round-off of its ``terms`` summands of total ``magnitude``; a measure of 1 or more (γ near 1 and rounding)
    is refused."""
    mu = float((rows + 4 * _EPS64 * terms * (magnitude + 1.0)).max())
    if not mu < 1.0:
        raise InputError(f"the operator's ℓ∞ measure is {mu:.6g} ≥ 1 after rounding: lower gamma")
    return LinfContractive(mu, weights, float(diagonal.min()))


def dense_guarantee(w: Tensor, weights: Tensor) -> LinfContractive:
    """The guarantee of the stored matrix ``w`` in the weights ``Δ``: the measure of ``ΔwΔ⁻¹`` in float64."""
    m = w.double() * (weights.double()[:, None] / weights.double()[None, :])
    diag = m.diagonal()
    magnitude = m.abs().sum(dim=1)
    rows = diag + magnitude - diag.abs()
    return _guarantee(rows, magnitude, w.shape[1], diag, weights)


def conv_guarantee(kernel: Tensor, shift: Tensor, weights: Tensor) -> LinfContractive:
    """The guarantee of the stored convolution ``Δ⁻¹(kernel∗ + diag(shift))Δ``: the shift and the centre tap of
    ``kernel[o, o]`` on the diagonal, every other tap off it (measures in float64)."""
    c = kernel.shape[-1] // 2
    k64, centre = kernel.double(), kernel[:, :, c, c].diagonal().double()
    diag = shift.double() + centre
    taps = k64.abs().sum(dim=(1, 2, 3))
    rows = diag + taps - centre.abs()
    magnitude = taps + shift.double().abs()
    return _guarantee(rows, magnitude, kernel[0].numel() + 1, diag, weights)


class DenseNemon(TrainableOperator):
    """Trainable dense ``W = Δ⁻¹(γI + T − diag(|T|𝟙))Δ`` on ``ℝⁿ`` (see the module docstring).

    Args:
        n: hidden width.
        gamma: the bound ``γ < 1`` on ``μ∞,Δ(W)`` (the original experiments use 0).
    """

    guarantee_type = LinfContractive

    def __init__(
        self, n: int, gamma: float = 0.0, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        if n < 1:
            raise InputError(f"the hidden width must be positive, got {n}")
        self.n, self.gamma = int(n), _check_gamma(gamma)
        bound = 1.0 / math.sqrt(n)
        self.T = nn.Parameter(torch.empty(n, n, dtype=dtype, device=device).uniform_(-bound, bound))
        self.delta = nn.Parameter(torch.zeros(n, dtype=dtype, device=device))

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,)

    def hyperparameters(self) -> tuple[float, ...]:
        return (self.gamma,)

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.T, self.delta)

    def weighted(self, tensors: Sequence[Tensor] | None = None) -> Tensor:
        """``M = ΔWΔ⁻¹ = γI + T − diag(|T|𝟙)`` (differentiable)."""
        t = (self.tensors() if tensors is None else tensors)[0]
        return torch.diag(self.gamma - t.abs().sum(dim=1)) + t

    def weight(self, tensors: Sequence[Tensor] | None = None) -> Tensor:
        """The matrix ``W = Δ⁻¹MΔ`` (differentiable in ``tensors``, the current parameters by default)."""
        delta = (self.tensors() if tensors is None else tensors)[1]
        return self.weighted(tensors) * torch.exp(delta[None, :] - delta[:, None])

    def measure(self, tensors: Sequence[Tensor] | None = None) -> Tensor:
        """``μ∞,Δ(W) = γ + maxᵢ 2 min(Tᵢᵢ, 0)`` in exact arithmetic (differentiable: the regulariser's)."""
        t = (self.tensors() if tensors is None else tensors)[0]
        return self.gamma + 2.0 * t.diagonal().clamp(max=0.0).max()

    def apply_W(self, tensors: Sequence[Tensor], z: Tensor) -> Tensor:
        return z @ self.weight(tensors).T

    def build(self, tensors: Sequence[Tensor]) -> DenseFrozenOperator:
        w = self.weight(tensors)
        return DenseFrozenOperator(w, guarantee=dense_guarantee(w, torch.exp(tensors[1])))

    def extra_repr(self) -> str:
        return f"n={self.n}, gamma={self.gamma}"


class ConvNemonFrozenOperator(FrozenOperator):
    """A NEMON convolution ``W = Δ⁻¹(K∗ + diag(shift))Δ`` with zero padding, applied with ``conv2d``
    (``shift = γ − S``, one entry per channel; ``weights``: ``Δ``, shape ``(c, 1, 1)``)."""

    def __init__(
        self, kernel: Tensor, weights: Tensor, shift: Tensor, shape: tuple[int, ...], guarantee: Guarantee
    ) -> None:
        super().__init__(guarantee, shape, kernel.dtype, kernel.device)
        self.kernel, self.pad = kernel, kernel.shape[-1] // 2
        self.scale, self.shift = weights, shift.view(-1, 1, 1)

    def W(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        u = z * self.scale
        out = F.conv2d(u, self.kernel, padding=self.pad).addcmul_(u, self.shift).div_(self.scale)
        return out if add is None else out.add_(add)

    def WT(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        u = z / self.scale
        out = F.conv_transpose2d(u, self.kernel, padding=self.pad).addcmul_(u, self.shift).mul_(self.scale)
        return out if add is None else out.add_(add)


class ConvNemon(TrainableOperator):
    """Trainable single-convolution NEMON ``W`` on ``c × H × W`` maps, one weight per channel.

    Args:
        channels: ``c``.
        size: ``(H, W)``.
        kernel_size: odd side of the kernel (zero padding keeps the size).
        gamma: the bound ``γ < 1`` on ``μ∞,Δ(W)``.
    """

    guarantee_type = LinfContractive

    def __init__(
        self,
        channels: int,
        size: tuple[int, int],
        kernel_size: int = 3,
        gamma: float = 0.0,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if channels < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise InputError(f"ConvNemon needs channels ≥ 1 and an odd kernel size, got {channels}, {kernel_size}")
        self.channels, self.size, self.kernel_size = int(channels), (int(size[0]), int(size[1])), int(kernel_size)
        self.gamma = _check_gamma(gamma)
        bound = 1.0 / math.sqrt(channels * kernel_size**2)
        k = kernel_size
        self.K = nn.Parameter(torch.empty(channels, channels, k, k, dtype=dtype, device=device).uniform_(-bound, bound))
        self.delta = nn.Parameter(torch.zeros(channels, dtype=dtype, device=device))

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, *self.size)

    def hyperparameters(self) -> tuple[float, ...]:
        return (self.gamma,)

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.K, self.delta)

    def _centre(self, kernel: Tensor) -> Tensor:
        c = self.kernel_size // 2
        return kernel[:, :, c, c].diagonal()

    def measure(self, tensors: Sequence[Tensor] | None = None) -> Tensor:
        """``μ∞,Δ(W) = γ + maxₒ 2 min(K[o, o, centre], 0)`` in exact arithmetic (differentiable)."""
        kernel = (self.tensors() if tensors is None else tensors)[0]
        return self.gamma + 2.0 * self._centre(kernel).clamp(max=0.0).max()

    def apply_W(self, tensors: Sequence[Tensor], z: Tensor) -> Tensor:
        kernel, delta = tensors
        scale = torch.exp(delta).view(-1, 1, 1)
        shift = (self.gamma - kernel.abs().sum(dim=(1, 2, 3))).view(-1, 1, 1)
        u = z * scale
        return (F.conv2d(u, kernel, padding=self.kernel_size // 2) + shift * u) / scale

    def build(self, tensors: Sequence[Tensor]) -> ConvNemonFrozenOperator:
        kernel, delta = tensors
        weights = torch.exp(delta).view(-1, 1, 1)
        shift = self.gamma - kernel.abs().sum(dim=(1, 2, 3))  # as the frozen operator stores it
        guarantee = conv_guarantee(kernel, shift, weights)  # the measure of what is applied
        return ConvNemonFrozenOperator(kernel, weights, shift, self.shape, guarantee)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={self.size}, kernel_size={self.kernel_size}, gamma={self.gamma}"
