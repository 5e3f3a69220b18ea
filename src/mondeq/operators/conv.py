"""Single-convolution monotone operator with an exact FFT resolvent (SPEC 4.2; Winston & Kolter 2020,
section 4.2).

``W z = (1 − m)z − AᵀA z + B z − Bᵀ z`` on ``z ∈ ℝ^{c×H×W}``, with ``A`` and ``B`` ``k × k`` convolutions
with circular padding, normalised as in the paper: ``A = √g·Â/‖Â‖_F``, ``B = h·B̂/‖B̂‖_F`` with learnable
scalars ``g = softplus(ĝ) > 0`` and ``h``. ``sym(I − W) = mI + AᵀA ⪰ mI`` for every parameter value.

A circular convolution is diagonalised by the 2-D DFT: at each spatial frequency it is a ``c × c`` matrix
``Â(f)``, and ``Aᵀ`` becomes ``Â(f)ᴴ``. The resolvent is therefore the per-frequency inverse of
``(1 + α)I − αŴ(f)``, computed once per parameter value and step on the half spectrum of ``rfft2`` (the
input is real), and applied with ``rfft2``/``irfft2`` and one batched matrix product.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .base import FrozenOperator, MonotoneOperator, Resolvent
from .guarantees import Guarantee, StronglyMonotone


def circular_conv(z: Tensor, kernel: Tensor) -> Tensor:
    """Cross-correlation of ``z`` (``batch × c × H × W``) with an odd ``k × k`` kernel, circular padding."""
    p = kernel.shape[-1] // 2
    return F.conv2d(F.pad(z, (p, p, p, p), mode="circular"), kernel)


def conv_transpose_kernel(kernel: Tensor) -> Tensor:
    """The kernel of the adjoint of :func:`circular_conv` with ``kernel``."""
    return kernel.transpose(0, 1).flip(-2, -1)


def normalized_kernel(kernel: Tensor, scale: Tensor) -> Tensor:
    """``scale · K/‖K‖_F`` (differentiable; a zero kernel stays zero)."""
    return scale * kernel / kernel.square().sum().clamp_min(torch.finfo(kernel.dtype).tiny).sqrt()


def conv_operator(z: Tensor, a: Tensor, a_t: Tensor, skew: Tensor, m: float) -> Tensor:
    """``(1 − m)z − a_t ⋆ (a ⋆ z) + skew ⋆ z`` with circular convolutions ``⋆`` (``W z`` for ``a_t`` the
    adjoint kernel of ``a`` and ``skew`` that of ``B − Bᵀ``)."""
    out = circular_conv(z, skew) - circular_conv(circular_conv(z, a), a_t)
    return out + (1.0 - m) * z


def kernel_spectrum(kernel: Tensor, size: tuple[int, int], full: bool = False) -> Tensor:
    """``K̂(f)`` on the ``rfft2`` half spectrum, ``(H, W//2 + 1, c_out, c_in)`` (``full``: on the whole
    ``fft2`` spectrum, ``(H, W, c_out, c_in)``), complex.

    :func:`circular_conv` with ``kernel`` is then ``ẑ(f) ↦ K̂(f) ẑ(f)`` at every frequency ``f``.
    """
    k, (h, w) = kernel.shape[-1], size
    p = k // 2
    if k > h or k > w:
        raise InputError(f"a {k}×{k} kernel does not fit a {h}×{w} image")
    embedded = kernel.new_zeros(*kernel.shape[:2], h, w)
    embedded[..., :k, :k] = kernel.flip(-2, -1)
    embedded = torch.roll(embedded, shifts=(-p, -p), dims=(-2, -1))
    return (torch.fft.fft2 if full else torch.fft.rfft2)(embedded).permute(2, 3, 0, 1)


def per_frequency_right(mat_hat: Tensor) -> Tensor:
    """Per-frequency matrices ``M̂(f)`` (``(H, W', c_out, c_in)``) as the right factors of
    :func:`spectral_apply`: ``M̂(f)ᵀ``, ``(H · W', c_in, c_out)``, contiguous."""
    h, w, c_out, c_in = mat_hat.shape
    return mat_hat.transpose(-2, -1).reshape(h * w, c_in, c_out).contiguous()


def spectral_apply(right: Tensor, v: Tensor, add: Tensor | None = None) -> Tensor:
    """``add + M v`` for the circulant operator ``M`` with per-frequency matrices ``M̂(f)``, given as
    ``right = M̂(f)ᵀ`` (:func:`per_frequency_right`, half spectrum), and real ``v`` (``batch × c_in × H × W``).

    Each frequency's batch is the row block ``v̂(f)ᵀ`` of one batched product ``v̂ᵀ M̂ᵀ``: the spectrum,
    ``(batch · c, H · W')``, goes in and out of that layout by 2-D transposes, which are much cheaper than
    the 4-D permutation that ``M̂ v̂`` would need.
    """
    b, c_in, h, w = v.shape
    w_half, c_out = w // 2 + 1, right.shape[-1]
    v_hat = torch.fft.rfft2(v).reshape(b * c_in, h * w_half).t().contiguous()  # (H · W', batch · c_in)
    out_hat = torch.bmm(v_hat.view(h * w_half, b, c_in), right)
    del v_hat  # freed before the inverse transform allocates
    out = torch.fft.irfft2(out_hat.view(h * w_half, b * c_out).t().view(b, c_out, h, w_half), s=(h, w))
    return out if add is None else out.add_(add)


def half_spectrum_weights(width: int, like: Tensor) -> Tensor:
    """How many columns of a ``width``-wide spectrum each ``rfft`` column stands for (1 or 2), as ``like``'s
    dtype and device: the weights of Parseval's identity on the half spectrum."""
    w = torch.full((width // 2 + 1,), 2.0, dtype=like.dtype, device=like.device)
    w[0] = 1.0
    if width % 2 == 0:
        w[-1] = 1.0
    return w


def adjoint_product(a: Tensor, b: Tensor) -> Tensor:
    """``aᴴb`` over batches of complex matrices. ``aᴴ`` is materialised first: a lazily conjugated operand
    sends the product's backward through a per-matrix loop, three times slower."""
    return a.mH.contiguous() @ b


def spectrum_of_W(a: Tensor, skew: Tensor, m: float, size: tuple[int, int]) -> Tensor:
    """``Ŵ(f) = (1 − m)I − Â(f)ᴴÂ(f) + Ŝ(f)`` on the half spectrum, differentiable in the kernels."""
    a_hat, s_hat = kernel_spectrum(a, size), kernel_spectrum(skew, size)
    eye = torch.eye(a.shape[0], dtype=a_hat.dtype, device=a_hat.device)
    return (1.0 - m) * eye - adjoint_product(a_hat, a_hat) + s_hat


def spectral_vjp(
    spectrum: Callable[[Sequence[Tensor]], Tensor], tensors: Sequence[Tensor], z: Tensor, u: Tensor,
    need: Sequence[bool],
) -> list[Tensor | None]:
    """``∂⟨u, Wz⟩/∂tensors`` (``None`` where ``need`` is false) for a circulant ``W`` whose half-spectrum
    matrices ``Ŵ(f) = spectrum(tensors)`` are differentiable: by Parseval ``⟨u, Wz⟩ = (1/HW) Σ_f ω_f Re tr(Ŵ(f)
    P(f))`` with ``P(f) = Σ_batch ẑ(f)û(f)ᴴ`` (``ω_f`` = 2 for the columns that stand for two frequencies),
    differentiated through the small tensor ``Ŵ(f)``."""
    b, c, h, w = z.shape
    w_half = w // 2 + 1
    with torch.no_grad():  # both spectra as (H · W', batch, c), by 2-D transposes as in spectral_apply
        z_hat, u_hat = (torch.fft.rfft2(t).reshape(b * c, h * w_half).t().reshape(h * w_half, b, c) for t in (z, u))
        p_t = torch.bmm(u_hat.mH, z_hat).view(h, w_half, c, c)  # P(f)ᵀ = Σ_batch conj(û(f)) ẑ(f)ᵀ
        p_t = p_t * (half_spectrum_weights(w, z)[:, None, None] / (h * w))
    grads: list[Tensor | None] = [None] * len(tensors)
    wanted = [i for i, n in enumerate(need) if n]
    if wanted:
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(n) for t, n in zip(tensors, need, strict=True)]
            objective = (spectrum(leaves) * p_t).sum().real
            found = torch.autograd.grad(objective, [leaves[i] for i in wanted])
            for i, g in zip(wanted, found, strict=True):
                grads[i] = g
    return grads


class FFTResolvent(Resolvent):
    """Per-frequency inverses ``R̂(f)`` of ``(1 + α)I − αŴ(f)``, applied in the Fourier domain."""

    def __init__(self, w_hat: Tensor, alpha: float) -> None:
        super().__init__(alpha)
        eye = torch.eye(w_hat.shape[-1], dtype=w_hat.dtype, device=w_hat.device)
        # R̂ᵀ directly, the right factor of spectral_apply: the inverse of the transposed matrix
        r_hat_t = torch.linalg.inv((1.0 + alpha) * eye - alpha * w_hat.transpose(-2, -1))
        self.right = r_hat_t.reshape(-1, *r_hat_t.shape[-2:])

    def apply(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        return spectral_apply(self.right, v, add)

    def apply_T(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        return spectral_apply(self.right_T, v, add)

    @cached_property
    def right_T(self) -> Tensor:
        """The right factor of ``Rᵀ``, ``(R̂ᴴ)ᵀ = (R̂ᵀ)ᴴ``, on first use (evaluation never needs it)."""
        return self.right.mH.contiguous()


def _norm_I_minus_W(w_hat: Tensor) -> float:
    """``‖I − W‖₂``: the largest singular value of ``I − Ŵ(f)`` over the frequencies (float64)."""
    eye = torch.eye(w_hat.shape[-1], dtype=w_hat.dtype, device=w_hat.device)
    norms = torch.linalg.matrix_norm((eye - w_hat).to(torch.complex128), ord=2)
    return float(norms.max()) * (1.0 + 1e-9)


class ConvFrozenOperator(FrozenOperator):
    """A circulant ``W`` given by its per-frequency matrices ``Ŵ(f)`` (half spectrum), with its guarantee:
    every product in frequency (one FFT pair and a batched ``c × c`` product, cheaper than the convolutions
    of ``W`` in space), and the exact FFT resolvent."""

    def __init__(self, w_hat: Tensor, guarantee: Guarantee, shape: tuple[int, int, int], dtype: torch.dtype) -> None:
        super().__init__(guarantee, shape, dtype, w_hat.device)
        self.w_hat = w_hat
        """``Ŵ(f)`` on the half spectrum, ``(H, W//2 + 1, c, c)``."""
        self.right = per_frequency_right(self.w_hat)

    def W(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        return spectral_apply(self.right, z, add)

    def WT(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        return spectral_apply(self.right_T, z, add)

    @cached_property
    def right_T(self) -> Tensor:
        """The right factor of ``Wᵀ``, ``(Ŵᴴ)ᵀ = (Ŵᵀ)ᴴ``, on first use."""
        return self.right.mH.contiguous()

    def _build_resolvent(self, alpha: float) -> Resolvent:
        return FFTResolvent(self.w_hat, alpha)


class ConvMonotone(MonotoneOperator):
    """Trainable single-convolution ``W`` on ``c × H × W`` feature maps (see the module docstring).

    Args:
        channels: ``c``.
        size: ``(H, W)`` of the feature maps (the FFT resolvent is exact for this size only).
        kernel_size: odd ``k``.
        m: strong monotonicity of ``I − W``.
    """

    def __init__(
        self,
        channels: int,
        size: tuple[int, int],
        kernel_size: int = 3,
        m: float = 1.0,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(m)
        if channels < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise InputError(f"need channels ≥ 1 and an odd kernel size, got {channels}, {kernel_size}")
        self.channels, self.size, self.kernel_size = int(channels), (int(size[0]), int(size[1])), kernel_size
        if kernel_size > min(self.size):
            raise InputError(f"a {kernel_size}×{kernel_size} kernel does not fit a {size} image")
        kw: dict[str, Any] = {"dtype": dtype, "device": device}
        shape = (channels, channels, kernel_size, kernel_size)
        bound = 1.0 / math.sqrt(channels * kernel_size**2)
        self.A = nn.Parameter(torch.empty(shape, **kw).uniform_(-bound, bound))
        self.B = nn.Parameter(torch.empty(shape, **kw).uniform_(-bound, bound))
        self.g = nn.Parameter(torch.full((), math.log(math.e - 1.0), **kw))  # softplus(ĝ) = 1
        self.h = nn.Parameter(torch.ones((), **kw))

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, *self.size)

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.A, self.B, self.g, self.h)

    def kernels(self, tensors: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """The normalised kernel ``A`` and the kernel of ``B − Bᵀ`` (differentiable in ``tensors``)."""
        a, b, g, h = self.tensors() if tensors is None else tensors
        a = normalized_kernel(a, torch.nn.functional.softplus(g).sqrt())
        b = normalized_kernel(b, h)
        return a, b - conv_transpose_kernel(b)

    def apply_W(self, tensors: Sequence[Tensor], z: Tensor) -> Tensor:
        a, skew = self.kernels(tensors)
        return conv_operator(z, a, conv_transpose_kernel(a), skew, self.m)

    def vjp(
        self, tensors: Sequence[Tensor], z: Tensor, u: Tensor, need: Sequence[bool]
    ) -> list[Tensor | None]:
        """In frequency (:func:`spectral_vjp`), instead of through three convolutions."""

        def spectrum(leaves: Sequence[Tensor]) -> Tensor:
            a, skew = self.kernels(leaves)
            return spectrum_of_W(a, skew, self.m, self.size)

        return spectral_vjp(spectrum, tensors, z, u, need)

    def build(self, tensors: Sequence[Tensor]) -> ConvFrozenOperator:
        a, skew = self.kernels(tensors)
        w_hat = spectrum_of_W(a, skew, self.m, self.size)
        # the guarantee computes ‖I − W‖₂ from the spectrum, not from the operator: no reference cycle
        guarantee = StronglyMonotone(self.m, functools.partial(_norm_I_minus_W, w_hat))
        return ConvFrozenOperator(w_hat, guarantee, self.shape, a.dtype)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={self.size}, kernel_size={self.kernel_size}, m={self.m}"
