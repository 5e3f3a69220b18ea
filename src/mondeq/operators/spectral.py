"""The FFT machinery of the convolutional operators (SPEC 4.2, 4.3, 4.5): circular convolutions, their
kernels' spectra on the ``rfft2`` half spectrum, batched per-frequency products, and the parameter gradient of
a circulant operator through its spectrum.

A circular convolution is diagonalised by the 2-D DFT: at each spatial frequency ``f`` it is a ``c_out × c_in``
matrix ``K̂(f)``, and its adjoint becomes ``K̂(f)ᴴ``. The input is real, so half the spectrum suffices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError


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
