"""Multi-tier (multi-scale) convolutional monotone operator (SPEC 4.3; Winston & Kolter 2020, section 4.3).

``z = (z₁, …, z_L)``, tier ``i`` with ``cᵢ`` channels at resolution ``H/2^{i−1} × W/2^{i−1}``, stored
flattened and concatenated (one vector per sample). ``A`` is block lower-bidiagonal: a same-resolution
convolution ``A_ii`` per tier and a stride-2 convolution ``A_{i+1,i}`` from tier ``i`` to ``i+1``. ``B`` is
a free block-diagonal convolution plus the fixed strictly-upper part that cancels the upper blocks of
``−AᵀA``, so ``W = (1 − m)I − AᵀA + B − Bᵀ`` is block lower-triangular. Every kernel is normalised as in
the paper, ``K = s·K̂/‖K̂‖_F`` with a learnable scale ``s`` (``√softplus(ĝ)`` for the ``A`` kernels, so that
``AᵀA`` keeps its sign; ``h`` for the ``B`` kernels):

    Wᵢᵢ      = (1 − m)I − AᵢᵢᵀAᵢᵢ − A_{i+1,i}ᵀA_{i+1,i} + Bᵢ − Bᵢᵀ
    W_{i+1,i} = −2 A_{i+1,i+1}ᵀ A_{i+1,i}

and ``sym(I − W) = mI + AᵀA ⪰ mI`` for every parameter value. The resolvent is a block forward substitution
over the tiers. A stride-2 convolution is ``S∘C`` (circular convolution, then keeping even pixels), and in
the 2-D DFT ``SᵀS`` averages the four aliased frequencies ``f, f + (H/2, 0), f + (0, W/2), f + (H/2, W/2)``;
each diagonal block is therefore a ``4cᵢ × 4cᵢ`` matrix per group of four frequencies, inverted once per
parameter value and step (the last tier, with no stride-2 term, per frequency).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import FrozenOperator, MonotoneOperator, Resolvent
from .conv import circular_conv, conv_transpose_kernel, kernel_spectrum, normalized_kernel


def _spectrum(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """``K̂(f)`` on the full 2-D spectrum, ``(H, W, c_out, c_in)``."""
    return kernel_spectrum(kernel, size, full=True)


def _to_groups(x: Tensor) -> Tensor:
    """Spectra ``(H, W, …)`` → alias groups ``(H/2, W/2, 4, …)``: group ``(p, q)`` holds the frequencies
    ``(p + aH/2, q + bW/2)`` for ``(a, b)`` = (0, 0), (0, 1), (1, 0), (1, 1), in that order."""
    h, w = x.shape[:2]
    x = x.reshape(2, h // 2, 2, w // 2, *x.shape[2:])
    return x.permute(1, 3, 0, 2, *range(4, x.dim())).reshape(h // 2, w // 2, 4, *x.shape[4:])


def _strided(z: Tensor, kernel: Tensor) -> Tensor:
    """Stride-2 circular convolution: the full-resolution convolution at even pixels."""
    return circular_conv(z, kernel)[..., ::2, ::2]


def _strided_T(z: Tensor, kernel: Tensor) -> Tensor:
    """Adjoint of :func:`_strided`: zero-insertion upsampling, then the adjoint convolution."""
    up = z.new_zeros(*z.shape[:2], 2 * z.shape[2], 2 * z.shape[3])
    up[..., ::2, ::2] = z
    return circular_conv(up, conv_transpose_kernel(kernel))


class _Kernels:
    """The effective kernels of one parameter value: ``A_ii``, ``A_{i+1,i}`` and the skew ``Bᵢ − Bᵢᵀ``."""

    def __init__(self, diag: Sequence[Tensor], down: Sequence[Tensor], skew: Sequence[Tensor]) -> None:
        self.diag, self.down, self.skew = list(diag), list(down), list(skew)


class MultiTierResolvent(Resolvent):
    """``(I + α(I − W))⁻¹`` by block forward substitution, each diagonal block inverted in frequency."""

    def __init__(self, op: MultiTierFrozenOperator, alpha: float) -> None:
        super().__init__(alpha)
        self.op = op
        self.inverses = []
        for blk in op.diagonal_spectra():
            eye = torch.eye(blk.shape[-1], dtype=blk.dtype, device=blk.device)
            self.inverses.append(torch.linalg.inv((1.0 + alpha) * eye - alpha * blk))

    def _block(self, i: int, v: Tensor, transpose: bool) -> Tensor:
        inv = self.inverses[i].mH if transpose else self.inverses[i]
        v_hat = torch.fft.fft2(v)  # (batch, c, H, W)
        if i < self.op.tiers - 1:  # the grouping of _to_groups, on (batch, c, H, W)
            b, c, h, w = v_hat.shape
            g = v_hat.reshape(b, c, 2, h // 2, 2, w // 2).permute(0, 3, 5, 2, 4, 1)
            out = torch.einsum("pqij,bpqj->bpqi", inv, g.reshape(b, h // 2, w // 2, 4 * c))
            out = out.reshape(b, h // 2, w // 2, 2, 2, c).permute(0, 5, 3, 1, 4, 2).reshape(b, c, h, w)
        else:
            out = torch.einsum("hwij,bjhw->bihw", inv, v_hat)
        return torch.fft.ifft2(out).real

    def _solve(self, v: Tensor, transpose: bool) -> Tensor:
        op, a = self.op, self.alpha
        vs = op.split(v)
        xs: list[Tensor] = [v.new_empty(0)] * op.tiers
        order = range(op.tiers - 1, -1, -1) if transpose else range(op.tiers)
        for i in order:
            rhs = vs[i]
            if not transpose and i > 0:
                rhs = rhs + a * op.sub_diagonal(i, xs[i - 1])
            if transpose and i < op.tiers - 1:
                rhs = rhs + a * op.sub_diagonal_T(i, xs[i + 1])
            xs[i] = self._block(i, rhs, transpose)
        return op.join(xs)

    def apply(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        out = self._solve(v, False)
        return out if add is None else out.add_(add)

    def apply_T(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        out = self._solve(v, True)
        return out if add is None else out.add_(add)


class MultiTierFrozenOperator(FrozenOperator):
    """``W`` of :class:`MultiTierMonotone` at fixed kernels."""

    def __init__(self, kernels: _Kernels, m: float, channels: Sequence[int], size: tuple[int, int]) -> None:
        a0 = kernels.diag[0]
        self.channels = list(channels)
        self.sizes = [(size[0] >> i, size[1] >> i) for i in range(len(channels))]
        self.numels = [c * h * w for c, (h, w) in zip(self.channels, self.sizes, strict=True)]
        super().__init__(m, (sum(self.numels),), a0.dtype, a0.device)
        self.k = kernels
        self.tiers = len(channels)

    def split(self, z: Tensor) -> list[Tensor]:
        parts = torch.split(z, self.numels, dim=1)
        return [p.reshape(-1, c, h, w) for p, c, (h, w) in zip(parts, self.channels, self.sizes, strict=True)]

    def join(self, zs: Sequence[Tensor]) -> Tensor:
        return torch.cat([z.flatten(1) for z in zs], dim=1)

    def sub_diagonal(self, i: int, x: Tensor) -> Tensor:
        """``W_{i,i−1} x`` = ``−2 AᵢᵢᵀA_{i,i−1} x`` (tier ``i−1`` → tier ``i``)."""
        k = self.k
        return -2.0 * circular_conv(_strided(x, k.down[i - 1]), conv_transpose_kernel(k.diag[i]))

    def sub_diagonal_T(self, i: int, x: Tensor) -> Tensor:
        """``W_{i+1,i}ᵀ x`` (tier ``i+1`` → tier ``i``)."""
        k = self.k
        return -2.0 * _strided_T(circular_conv(x, k.diag[i + 1]), k.down[i])

    def _diagonal(self, i: int, z: Tensor, transpose: bool) -> Tensor:
        k = self.k
        skew = conv_transpose_kernel(k.skew[i]) if transpose else k.skew[i]
        a = k.diag[i]
        out = circular_conv(z, skew) - circular_conv(circular_conv(z, a), conv_transpose_kernel(a))
        if i < self.tiers - 1:
            out = out - _strided_T(_strided(z, k.down[i]), k.down[i])
        return out + (1.0 - self.m) * z

    def W(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        zs = self.split(z)
        out = [self._diagonal(i, zs[i], False) + (self.sub_diagonal(i, zs[i - 1]) if i else 0.0)
               for i in range(self.tiers)]
        res = self.join(out)
        return res if add is None else res.add_(add)

    def WT(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        zs = self.split(z)
        out = [self._diagonal(i, zs[i], True)
               + (self.sub_diagonal_T(i, zs[i + 1]) if i < self.tiers - 1 else 0.0)
               for i in range(self.tiers)]
        res = self.join(out)
        return res if add is None else res.add_(add)

    def diagonal_spectra(self) -> list[Tensor]:
        """``Wᵢᵢ`` in frequency: ``(H/2, W/2, 4cᵢ, 4cᵢ)`` per alias group (the last tier ``(H, W, c, c)``)."""
        k, out = self.k, []
        for i in range(self.tiers):
            size, c = self.sizes[i], self.channels[i]
            a_hat = _spectrum(k.diag[i], size)
            d = -(a_hat.mH @ a_hat) + _spectrum(k.skew[i], size)
            d = d + (1.0 - self.m) * torch.eye(c, dtype=d.dtype, device=d.device)
            if i == self.tiers - 1:
                out.append(d)
                continue
            d = _to_groups(d)  # (P, Q, 4, c, c)
            blk = torch.zeros(*d.shape[:2], 4 * c, 4 * c, dtype=d.dtype, device=d.device)
            for j in range(4):
                blk[..., j * c : (j + 1) * c, j * c : (j + 1) * c] = d[:, :, j]
            p = _to_groups(_spectrum(k.down[i], size))  # (P, Q, 4, c_next, c)
            p = p.permute(0, 1, 3, 2, 4).reshape(*p.shape[:2], p.shape[3], 4 * c)
            out.append(blk - 0.25 * (p.mH @ p))
        return out

    def _build_resolvent(self, alpha: float) -> Resolvent:
        return MultiTierResolvent(self, alpha)

    def _norm_I_minus_W(self) -> float:
        """``max ‖I − Wᵢᵢ‖ + max ‖W_{i+1,i}‖`` (exact blocks from their spectra): a bound of ``‖I − W‖₂``."""
        diag = 0.0
        for blk in self.diagonal_spectra():
            eye = torch.eye(blk.shape[-1], dtype=blk.dtype, device=blk.device)
            diag = max(diag, float(torch.linalg.matrix_norm((eye - blk).to(torch.complex128), ord=2).max()))
        sub = 0.0
        for i in range(self.tiers - 1):
            size = self.sizes[i]
            p = _to_groups(_spectrum(self.k.down[i], size))
            p = p.permute(0, 1, 3, 2, 4).reshape(*p.shape[:2], p.shape[3], -1).to(torch.complex128)
            norm_down = 0.5 * float(torch.linalg.matrix_norm(p, ord=2).max())
            a_hat = _spectrum(self.k.diag[i + 1], self.sizes[i + 1]).to(torch.complex128)
            norm_diag = float(torch.linalg.matrix_norm(a_hat, ord=2).max())
            sub = max(sub, 2.0 * norm_down * norm_diag)
        return (diag + sub) * (1.0 + 1e-9)


class MultiTierMonotone(MonotoneOperator):
    """Trainable multi-tier ``W`` (see the module docstring).

    Args:
        channels: ``(c₁, …, c_L)``, ``L ≥ 2``.
        size: ``(H, W)`` of the first tier; both divisible by ``2^{L−1}``.
        kernel_size: odd ``k`` of every convolution.
        m: strong monotonicity of ``I − W``.
    """

    def __init__(
        self,
        channels: Sequence[int],
        size: tuple[int, int],
        kernel_size: int = 3,
        m: float = 1.0,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(m)
        self.channels, self.size, self.kernel_size = [int(c) for c in channels], tuple(size), kernel_size
        levels = len(self.channels)
        if levels < 2 or min(self.channels) < 1 or kernel_size % 2 == 0:
            raise InputError(f"need ≥ 2 tiers of ≥ 1 channel and an odd kernel, got {channels}, {kernel_size}")
        if any(s % 2 ** (levels - 1) for s in self.size):
            raise InputError(f"image size {tuple(size)} is not divisible by 2^{levels - 1} for {levels} tiers")
        if kernel_size > min(self.size) >> (levels - 1):
            raise InputError(f"a {kernel_size}×{kernel_size} kernel does not fit the last tier")
        kw = {"dtype": dtype, "device": device}

        def kernel(c_out: int, c_in: int) -> nn.Parameter:
            bound = 1.0 / math.sqrt(c_in * kernel_size**2)
            return nn.Parameter(torch.empty(c_out, c_in, kernel_size, kernel_size, **kw).uniform_(-bound, bound))

        c = self.channels
        self.A_diag = nn.ParameterList([kernel(ci, ci) for ci in c])
        self.A_down = nn.ParameterList([kernel(c[i + 1], c[i]) for i in range(levels - 1)])
        self.B = nn.ParameterList([kernel(ci, ci) for ci in c])
        g0 = math.log(math.e - 1.0)  # softplus(ĝ) = 1
        self.g = nn.Parameter(torch.full((2 * levels - 1,), g0, **kw))  # scales of A_diag, then A_down
        self.h = nn.Parameter(torch.ones(levels, **kw))

    @property
    def shape(self) -> tuple[int, ...]:
        return (sum(c * (self.size[0] >> i) * (self.size[1] >> i) for i, c in enumerate(self.channels)),)

    def tensors(self) -> tuple[Tensor, ...]:
        return (*self.A_diag, *self.A_down, *self.B, self.g, self.h)

    def _kernels(self, tensors: Sequence[Tensor]) -> _Kernels:
        n = len(self.channels)
        *kernels, g, h = tensors
        scales = torch.nn.functional.softplus(g).sqrt()
        a = [normalized_kernel(k, s) for k, s in zip(kernels[: 2 * n - 1], scales, strict=True)]
        b = [normalized_kernel(k, s) for k, s in zip(kernels[2 * n - 1 :], h, strict=True)]
        return _Kernels(a[:n], a[n:], [bi - conv_transpose_kernel(bi) for bi in b])

    def _frozen_like(self, tensors: Sequence[Tensor]) -> MultiTierFrozenOperator:
        return MultiTierFrozenOperator(self._kernels(tensors), self.m, self.channels, self.size)  # type: ignore

    def apply_W(self, tensors: Sequence[Tensor], z: Tensor) -> Tensor:
        return self._frozen_like(tensors).W(z)

    def build(self, tensors: Sequence[Tensor]) -> MultiTierFrozenOperator:
        return self._frozen_like(tensors)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={self.size}, kernel_size={self.kernel_size}, m={self.m}"

