"""Symmetric operators ``W = VᵀV`` of optimization-induced equilibrium networks (OptEq, SPEC 4.5; Xie, Wang,
Ling, Li, Wang, Liu & Lin, "Optimization induced equilibrium networks", TPAMI 2023).

With ``‖V‖₂ ≤ γ`` the operator ``W = VᵀV`` is symmetric with ``0 ⪯ W ⪯ γ²I``: ``I − W`` is ``(1 − γ²)``-strongly
monotone with ``‖I − W‖₂ ≤ 1``, and for ``σ = prox_f`` the equilibrium ``z* = σ(Wz* + y)`` is the unique minimiser
of the strongly convex objective (:func:`objective`)

    G(z) = Σᵢ f(zᵢ) + ½ zᵀ(I − W)z − ⟨y, z⟩,

whose optimality condition ``0 ∈ ∂f(z) + (I − W)z − y`` is ``z = prox_f(Wz + y)``. The parameterization

    V = γ · V̂ / max(‖V̂‖₂, 1)

keeps ``‖V‖₂ ≤ γ`` for every ``V̂`` and reaches every ``V`` with ``‖V‖₂ ≤ γ`` (take ``V̂ = V/γ``). ``‖V̂‖₂`` is
computed, not estimated (a power iteration gives a lower bound, under which ``‖V‖₂`` could exceed ``γ``): from a
float64 eigen-decomposition of ``V̂ᵀV̂`` for a dense ``V̂``; for a circular convolution, whose singular values are
those of its per-frequency matrices ``V̂(f)`` (the 2-D DFT block-diagonalises it), as the largest over every
frequency; then raised by a rounding margin of ``4n·ε₆₄·‖V̂‖_F²`` on ``λmax`` (the Gram product's proven bound
plus the eigensolver's backward error, which LAPACK keeps at a modest multiple of ``n·ε₆₄·‖V̂ᵀV̂‖`` in practice but
does not state as a constant). The frozen operator stores ``W`` (dense) or ``Ŵ(f) = V̂(f)ᴴV̂(f)`` scaled (circulant),
computed in float64 and rounded once to the working precision, and its guarantee is that of the stored values:
``λmax ≤ (1 − δ)‖V‖₂² + p + e ≤ γ²`` and ``λmin ≥ −p − e`` (so ``‖I − W‖₂ ≤ 1 + p + e``), with
``‖V‖₂ ≤ γ·min(‖V̂‖₂, 1)`` from the computed bound of ``‖V̂‖₂``, ``p`` the float64 products' rounding bound,
``e`` the measured Frobenius norm of the final rounding and ``δ`` a margin of a few roundings applied to ``W``.
The differentiable path (parameter gradients) uses the same ``‖V̂‖₂`` as the bilinear form ``Re uᴴV̂v`` of its
top singular vectors, whose gradient ``Re(u vᴴ)`` is that of the largest singular value.

With ``γ = 1`` the fixed-point set of ``VᵀV`` need not be a point (or may be empty): the guarantee is then only
:class:`~mondeq.operators.guarantees.Nonexpansive`, and the anchored (Halpern) iteration selects the fixed point
nearest its anchor (:mod:`mondeq.solvers.halpern`); there is no implicit gradient. The stored operator itself is
rounded inside ``‖W‖₂ ≤ 1`` by the margin ``δ`` (about ``√n`` float32 roundings), so strictly it has a unique fixed
point, which the anchored iteration reaches only after some ``1/δ`` iterations: before that it follows the
selection of the exact ``VᵀV``.

Deep OptEq: with blocks ``z = (z₁, …, z_L)`` and ``V`` block lower bidiagonal (block row ``i`` holds ``V_{i,i}``
and ``V_{i,i−1}``), ``W = VᵀV`` is block tridiagonal, ``W_{jk} = Σᵢ V_{ij}ᵀV_{ik}``: each block is coupled to its
neighbours only. It is still one symmetric operator with the guarantee above, so every ℓ2 solver applies with
the same proof; with all blocks at one resolution the conv form keeps its per-frequency structure and so its
exact FFT resolvent.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..activations import Activation
from ..errors import InputError
from .base import FrozenOperator, TrainableOperator
from .conv import ConvFrozenOperator
from .dense import DenseFrozenOperator
from .guarantees import Guarantee, Nonexpansive, Symmetric
from .spectral import adjoint_product, circular_conv, conv_transpose_kernel, kernel_spectrum, spectral_vjp

_EPS64 = torch.finfo(torch.float64).eps


def _check_gamma(gamma: float) -> float:
    if not 0.0 < gamma <= 1.0:
        raise InputError(f"the bound gamma on ‖V‖₂ must be in (0, 1], got {gamma}")
    return float(gamma)


@dataclass(frozen=True)
class NormWitness:
    """``‖V̂‖₂`` at one parameter value with what differentiates it: the top singular vectors (of ``V̂(f*)`` at
    the frequency ``f*`` of the maximum, for a circular convolution, with each tap's phase there)."""

    value: float
    """An upper bound of ``‖V̂‖₂``: the computed value raised by its rounding error."""
    u: Tensor
    v: Tensor
    scale: float
    """``c = √(1 − δ)·γ/max(value, 1)``: the stored ``W`` is ``(cV̂)ᴴ(cV̂)`` rounded."""
    phases: Tensor | None = None
    """``(k·k,)`` complex: ``V̂(f*) = Σ_t K[:, :, t]·phases[t]``."""

    def differentiable_scale(self, v_hat: Tensor) -> Tensor:
        """``c`` as a function of ``V̂`` (of ``V̂(f*)`` for a convolution): ``‖V̂‖₂`` is replaced by ``Re uᴴV̂v``,
        equal in value, whose gradient is that of the largest singular value."""
        sigma = (self.u.conj().to(v_hat.dtype) @ v_hat @ self.v.to(v_hat.dtype)).real
        sigma = self.value + (sigma - sigma.detach())  # the certified value, with the gradient of σmax
        return self.scale * max(self.value, 1.0) / torch.clamp(sigma, min=1.0)


def _top_singular(gram: Tensor, frob2: float) -> tuple[float, Tensor]:
    """A certified upper bound of ``σmax(V̂) = √λmax(V̂ᴴV̂)`` from the float64 Gram matrix, and the top right
    singular vector: the computed eigenvalue raised by the Gram product's and the eigensolver's rounding (each
    at most ``n·u·‖V̂‖_F²``)."""
    evals, evecs = torch.linalg.eigh(gram)
    bound = float(evals[-1]) + 4.0 * gram.shape[-1] * _EPS64 * frob2
    return math.sqrt(max(bound, 0.0)), evecs[:, -1]


def _certify(
    gram: Tensor, value: float, frob2: float, gamma: float, dtype: torch.dtype
) -> tuple[Tensor, Guarantee, float]:
    """``W = c²·V̂ᴴV̂`` from the float64 (per-frequency) Gram matrices with ``c = √(1 − δ)·γ/max(value, 1)``, rounded
    once to ``dtype``, with the guarantee of the rounded values and ``c`` (see the module docstring; ``frob2``
    bounds every ``‖V̂‖_F²``)."""
    dim = gram.shape[-1]
    eps = torch.finfo(dtype.to_real() if dtype.is_complex else dtype).eps
    c0 = (gamma / max(value, 1.0)) ** 2
    norm2 = c0 * value**2  # ‖γV̂/max(‖V̂‖₂, 1)‖₂² ≤ γ² (smaller where ‖V̂‖₂ < 1)
    products = 5.0 * dim * _EPS64 * c0 * frob2  # ‖fl(c²V̂ᴴV̂) − c²V̂ᴴV̂‖₂ ≤ n·u·c²‖V̂‖_F², with room
    # δ·‖V‖₂² covers the products' rounding and the final one (≤ u‖W‖_F ≤ u√dim‖V‖₂²): λmax(stored) ≤ ‖V‖₂²; all
    # terms relative (products/‖V‖₂² ≤ 5·dim²·ε₆₄), so δ does not depend on the scale of V̂
    tiny = torch.finfo(torch.float64).tiny
    delta = 2.0 * math.sqrt(dim) * eps + 16.0 * dim * _EPS64 + 2.0 * products / max(norm2, tiny)
    c2 = (1.0 - delta) * c0
    target = (0.5 * c2) * (gram + gram.mH)  # exactly Hermitian
    stored = target.to(dtype)
    err = float(torch.linalg.matrix_norm(stored.to(target.dtype) - target).max()) * (1.0 + 4.0 * dim * _EPS64)
    top, bottom = (1.0 - delta) * norm2 + products + err, products + err  # λ(stored) ∈ [−bottom, top]
    top, bottom = top + 4.0 * _EPS64, bottom + 4.0 * _EPS64  # m = 1 − top and L = 1 + bottom are rounded too
    if gamma < 1.0:
        if not top < 1.0:
            raise InputError(f"‖W‖₂ is bounded by {top:.6g} ≥ 1 after rounding: lower gamma")
        guarantee: Guarantee = Symmetric(1.0 - top, functools.partial(float, 1.0 + bottom))
    else:
        if not top <= 1.0:  # pragma: no cover - δ absorbs the rounding
            raise InputError(f"‖W‖₂ is bounded by {top:.6g} > 1 after rounding")
        guarantee = Nonexpansive(symmetric=True)
    return stored, guarantee, math.sqrt(c2)


class _OptEqOperator(TrainableOperator):
    """What the dense and the convolutional ``W = VᵀV`` share: ``γ``, the guarantee type, ``m``, and ``V̂`` from its
    blocks (the diagonal blocks ``V_{i,i}`` and, for a deep OptEq, the blocks ``V_{i,i−1}`` below them)."""

    def __init__(self, gamma: float, blocks: tuple[int, ...], tail: tuple[int, ...], dtype: torch.dtype | None,
                 device: torch.device | str | None) -> None:
        super().__init__()
        self.gamma = _check_gamma(gamma)
        self.blocks, self._tail = blocks, tail
        taps = math.prod(tail)

        def init(rows: int, cols: int, fan_in: int) -> nn.Parameter:
            bound = 1.0 / math.sqrt(fan_in * taps)
            return nn.Parameter(torch.empty(rows, cols, *tail, dtype=dtype, device=device).uniform_(-bound, bound))

        fan = [b + (blocks[i - 1] if i else 0) for i, b in enumerate(blocks)]
        self.diagonal = nn.ParameterList([init(b, b, fan[i]) for i, b in enumerate(blocks)])
        self.below = nn.ParameterList([init(blocks[i], blocks[i - 1], fan[i]) for i in range(1, len(blocks))])

    @property  # type: ignore[override]
    def guarantee_type(self) -> type[Guarantee]:  # type: ignore[override]
        """``Symmetric`` for ``γ < 1``, ``Nonexpansive`` for ``γ = 1`` (derived from ``gamma``, never stale)."""
        return Nonexpansive if self.gamma == 1.0 else Symmetric

    def hyperparameters(self) -> tuple[float, ...]:
        return (self.gamma,)

    def tensors(self) -> tuple[Tensor, ...]:
        return (*self.diagonal, *self.below)

    def v_hat(self, tensors: Sequence[Tensor] | None = None) -> Tensor:
        """``V̂`` (its kernel, for a convolution) assembled from its blocks (differentiable in ``tensors``)."""
        tensors = tuple(self.tensors() if tensors is None else tensors)
        blocks, count = self.blocks, len(self.blocks)
        if count == 1:
            return tensors[0]
        diagonal, below = tensors[:count], tensors[count:]
        ends, total, rows = [0, *itertools.accumulate(blocks)], sum(blocks), []
        for i, d in enumerate(diagonal):
            left, right = (ends[i - 1] if i else 0), total - ends[i + 1]
            pieces = [d.new_zeros(blocks[i], left, *self._tail)] if left else []
            pieces += [below[i - 1], d] if i else [d]
            if right:
                pieces.append(d.new_zeros(blocks[i], right, *self._tail))
            rows.append(torch.cat(pieces, dim=1))
        return torch.cat(rows, dim=0)

    @property
    def m(self) -> float:
        """The certified strong monotonicity of ``I − W`` at the current parameters (about ``1 − γ²``)."""
        return self.frozen().m

    def witness(self, tensors: Sequence[Tensor]) -> NormWitness:
        """The :class:`NormWitness` of ``V̂`` at ``tensors`` (from the cached frozen operator)."""
        return self.frozen(tensors).witness  # type: ignore[attr-defined,no-any-return]


class DenseOptEq(_OptEqOperator):
    """Trainable dense ``W = VᵀV`` with ``‖V‖₂ ≤ γ`` (see the module docstring).

    Args:
        n: the width, or the widths of the blocks of a deep OptEq (``V`` is then block lower bidiagonal).
        gamma: the bound on ``‖V‖₂``, in ``(0, 1]`` (1: fixed points need not be unique; inference only).
    """

    def __init__(
        self, n: int | Sequence[int], gamma: float = 0.95, *, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(gamma, _blocks(n, "the widths"), (), dtype, device)
        self.n = sum(self.blocks)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,)

    def weight(self, tensors: Sequence[Tensor] | None = None) -> Tensor:
        """The matrix ``W`` (differentiable in ``tensors``, the current parameters by default)."""
        tensors = tuple(self.tensors() if tensors is None else tensors)
        v = self.v_hat(tensors)
        vs = self.witness(tensors).differentiable_scale(v) * v
        return vs.T @ vs

    def apply_W(self, tensors: Sequence[Tensor], z: Tensor) -> Tensor:
        return z @ self.weight(tensors)  # W is symmetric

    def build(self, tensors: Sequence[Tensor]) -> FrozenOperator:
        v = self.v_hat(tensors)
        v64 = v.to(torch.float64)
        gram, frob2 = v64.T @ v64, float(v64.square().sum())
        value, right = _top_singular(gram, frob2)
        left = v64 @ right
        left = left / torch.linalg.vector_norm(left).clamp_min(torch.finfo(torch.float64).tiny)
        stored, guarantee, scale = _certify(gram, value, frob2, self.gamma, v.dtype)
        op = DenseFrozenOperator(stored, guarantee=guarantee)
        op.witness = NormWitness(value, left, right, scale)  # type: ignore[attr-defined]
        return op

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}, gamma={self.gamma}"


class ConvOptEq(_OptEqOperator):
    """Trainable convolutional ``W = VᵀV`` on ``c × H × W`` feature maps: ``V`` a ``k × k`` circular convolution
    (``c → c`` channels), ``Vᵀ`` its transposed convolution, ``‖V‖₂ ≤ γ`` (see the module docstring).

    Args:
        channels: ``c``, or the channels of the blocks of a deep OptEq (all at one resolution; the kernel is
            then block lower bidiagonal over the channel blocks).
        size: ``(H, W)`` of the feature maps.
        kernel_size: odd ``k``.
        gamma: the bound on ``‖V‖₂``, in ``(0, 1]``.
    """

    def __init__(
        self, channels: int | Sequence[int], size: tuple[int, int], kernel_size: int = 3, gamma: float = 0.95, *,
        dtype: torch.dtype | None = None, device: torch.device | str | None = None,
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0 or kernel_size > min(int(size[0]), int(size[1])):
            raise InputError(f"need an odd kernel size that fits a {tuple(size)} map, got {kernel_size}")
        super().__init__(gamma, _blocks(channels, "the channels"), (kernel_size, kernel_size), dtype, device)
        self.channels = sum(self.blocks)
        self.size, self.kernel_size = (int(size[0]), int(size[1])), int(kernel_size)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, *self.size)

    def kernel(self, tensors: Sequence[Tensor] | None = None) -> Tensor:
        """The kernel of ``V = cV̂`` (differentiable in ``tensors``)."""
        tensors = tuple(self.tensors() if tensors is None else tensors)
        v, witness = self.v_hat(tensors), self.witness(tensors)
        assert witness.phases is not None
        at_max = (v.flatten(2).to(witness.phases.dtype) * witness.phases).sum(dim=-1)  # V̂(f*)
        return witness.differentiable_scale(at_max).to(v.dtype) * v

    def apply_W(self, tensors: Sequence[Tensor], z: Tensor) -> Tensor:
        k = self.kernel(tensors)
        return circular_conv(circular_conv(z, k), conv_transpose_kernel(k))

    def vjp(
        self, tensors: Sequence[Tensor], z: Tensor, u: Tensor, need: Sequence[bool]
    ) -> list[Tensor | None]:
        """In frequency (:func:`~mondeq.operators.spectral.spectral_vjp`), through ``Ŵ(f) = V̂(f)ᴴV̂(f)``."""

        def spectrum(leaves: Sequence[Tensor]) -> Tensor:
            k_hat = kernel_spectrum(self.kernel(leaves), self.size)
            return adjoint_product(k_hat, k_hat)

        return spectral_vjp(spectrum, tensors, z, u, need)

    def build(self, tensors: Sequence[Tensor]) -> FrozenOperator:
        v = self.v_hat(tensors)
        k_hat = kernel_spectrum(v.to(torch.float64), self.size)  # (H, W', c, c)
        gram = k_hat.mH @ k_hat
        frob2 = float(k_hat.abs().square().sum(dim=(-2, -1)).max())
        tops = torch.linalg.eigvalsh(gram)[..., -1]
        at = int(tops.argmax())
        p, q = divmod(at, tops.shape[1])
        value, right = _top_singular(gram[p, q], frob2)  # the bound covers every frequency: λ(f*) is the largest
        left = k_hat[p, q] @ right
        left = left / torch.linalg.vector_norm(left).clamp_min(torch.finfo(torch.float64).tiny)
        complex_dtype = torch.complex128 if v.dtype == torch.float64 else torch.complex64
        stored, guarantee, scale = _certify(gram, value, frob2, self.gamma, complex_dtype)
        k = self.kernel_size
        taps = torch.eye(k * k, dtype=torch.float64, device=v.device).view(k * k, 1, k, k)
        phases = kernel_spectrum(taps, self.size)[p, q, :, 0]
        op = ConvFrozenOperator(stored, guarantee, self.shape, v.dtype)  # type: ignore[arg-type]
        op.witness = NormWitness(value, left, right, scale, phases)  # type: ignore[attr-defined]
        return op

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}, size={self.size}, kernel_size={self.kernel_size}, gamma={self.gamma}"


def _blocks(sizes: int | Sequence[int], what: str) -> tuple[int, ...]:
    out = (int(sizes),) if isinstance(sizes, int) else tuple(int(s) for s in sizes)
    if not out or min(out) < 1:
        raise InputError(f"{what} must be positive, got {sizes}")
    return out


def objective(op: FrozenOperator, act: Activation, y: Tensor, z: Tensor) -> Tensor:
    """Per sample, ``G(z) = Σᵢ f(zᵢ) + ½ zᵀ(I − W)z − ⟨y, z⟩`` for a symmetric ``W`` (SPEC 4.5): the strongly
    convex function the equilibrium ``z* = σ(Wz* + y)``, ``σ = prox_f``, minimises (``+∞`` outside the domain of
    ``f``, e.g. at a negative ``z`` for ReLU).

    Raises:
        InputError: ``W`` is not known to be symmetric (then no such ``G`` exists).
    """
    g = op.guarantee
    if not (isinstance(g, Symmetric) or (isinstance(g, Nonexpansive) and g.symmetric)):
        raise InputError(f"the objective needs a symmetric W, got an operator that is {g.describe()}")
    quad = (z * (z - op.W(z))).flatten(1).sum(dim=1)
    return act.value(z).flatten(1).sum(dim=1) + 0.5 * quad - (y * z).flatten(1).sum(dim=1)
