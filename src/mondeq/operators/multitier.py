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

and ``sym(I − W) = mI + AᵀA ⪰ mI`` for every parameter value.

In frequency. A stride-2 convolution is ``S∘C`` (circular convolution, then keeping even pixels); in the
2-D DFT, ``S`` sums the four aliased frequencies ``f + (aH/2, bW/2)``, ``a, b ∈ {0, 1}``, of a group onto one
coarse frequency, so ``Wᵢᵢ`` is a ``4cᵢ × 4cᵢ`` matrix per group and ``W_{i+1,i}`` a ``c_{i+1} × 4cᵢ`` one
(the last tier: ``c_L × c_L`` per frequency). The inputs are real, so only the groups of the ``rfft2`` half of
the coarse spectrum are kept; the members of a group outside the ``rfft2`` half of the fine spectrum are
read as complex conjugates of stored ones. ``W``, ``Wᵀ`` and the resolvent — a block forward substitution
over the tiers with each diagonal block inverted per group, once per parameter value — then cost one
``rfft2``/``irfft2`` pair per tier and one batched product per tier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .base import FrozenOperator, MonotoneOperator, Resolvent
from .conv import circular_conv, conv_transpose_kernel, kernel_spectrum, normalized_kernel


def _tier_sizes(size: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    return [(size[0] >> i, size[1] >> i) for i in range(levels)]


def _split(z: Tensor, channels: Sequence[int], sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Flat ``(batch, Σ cᵢHᵢWᵢ)`` → the tiers ``(batch, cᵢ, Hᵢ, Wᵢ)``."""
    parts = torch.split(z, [c * h * w for c, (h, w) in zip(channels, sizes, strict=True)], dim=1)
    return [p.reshape(-1, c, h, w) for p, c, (h, w) in zip(parts, channels, sizes, strict=True)]


def _join(zs: Sequence[Tensor], add: Tensor | None = None) -> Tensor:
    """Inverse of :func:`_split` (plus ``add``)."""
    out = torch.cat([z.flatten(1) for z in zs], dim=1)
    return out if add is None else out.add_(add)


def _strided(z: Tensor, kernel: Tensor) -> Tensor:
    """Stride-2 circular convolution: the full-resolution convolution at even pixels."""
    p = kernel.shape[-1] // 2
    return F.conv2d(F.pad(z, (p, p, p, p), mode="circular"), kernel, stride=2)


def _per_frequency(x_hat: Tensor) -> Tensor:
    """``rfft2`` spectrum ``(batch, c, H, W')`` → ``(H · W', c, batch)``, one matrix row-block a frequency."""
    return x_hat.permute(2, 3, 1, 0).reshape(-1, x_hat.shape[1], x_hat.shape[0])


def _from_per_frequency(y: Tensor, h: int, w: int) -> Tensor:
    """Inverse of :func:`_per_frequency` for an ``(h, w)`` spectrum."""
    return y.reshape(h, w, *y.shape[1:]).permute(3, 2, 0, 1)


class _Tier:
    """Index bookkeeping of one tier's ``rfft2`` spectrum ``(batch, c, H, W//2 + 1)``.

    A grouped tier (every tier but the last) is gathered into its alias groups, ``(G, 4c, batch)`` with
    ``G = H/2 · (⌊W/4⌋ + 1)`` (the ``rfft2`` half of the coarse spectrum) and member ``2a + b`` holding
    frequency ``(p + aH/2, q + bW/2)`` of group ``(p, q)``; the last tier, one frequency a group, into
    ``(H · (W//2 + 1), c, batch)``.
    """

    def __init__(self, channels: int, size: tuple[int, int], grouped: bool, device: torch.device) -> None:
        self.c, self.size, self.grouped = channels, size, grouped
        h, w = size
        if grouped:
            self.half, q = (h // 2, w // 2), w // 2
            self.cols = q // 2 + 1  # the rfft2 columns of the coarse spectrum
            self.split = q - self.cols + 1  # rfft2 columns [0, split) come from members b = 0, the rest b = 1
            self.neg = (-torch.arange(h, device=device)) % h  # row of −f
            self.groups, self.n = self.half[0] * self.cols, 4 * channels
        else:
            self.groups, self.n = h * (w // 2 + 1), channels

    def members(self, full: Tensor) -> Tensor:
        """A full ``fft2`` spectrum ``(H, W, …)`` → its kept groups ``(H/2, ⌊W/4⌋ + 1, 4, …)``."""
        h, w = self.size
        x = full.reshape(2, h // 2, 2, w // 2, *full.shape[2:])
        x = x.permute(1, 3, 0, 2, *range(4, x.dim()))[:, : self.cols]
        return x.reshape(h // 2, self.cols, 4, *full.shape[2:])

    def gather(self, x_hat: Tensor) -> Tensor:
        """``rfft2`` spectrum ``(batch, c, H, W//2 + 1)`` → ``(G, n, batch)``."""
        if not self.grouped:
            return _per_frequency(x_hat)
        b = x_hat.shape[0]
        (p, _), q, k = self.half, self.size[1] // 2, self.cols
        m0 = x_hat[..., :k]
        m1 = x_hat.index_select(2, self.neg)[..., q - k + 1 : q + 1].flip(-1).conj()
        g = torch.stack([m0, m1], dim=3).reshape(b, self.c, 2, p, 2, k)  # (batch, c, a, p, b, q)
        return g.permute(3, 5, 2, 4, 1, 0).reshape(self.groups, self.n, b)

    def scatter(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`gather`."""
        b = y.shape[-1]
        h, w = self.size
        if not self.grouped:
            return _from_per_frequency(y, h, w // 2 + 1)
        (p, _), k = self.half, self.cols
        y = y.reshape(p, k, 2, 2, self.c, b).permute(5, 4, 3, 2, 0, 1)  # (batch, c, b, a, p, q)
        m0 = y[:, :, 0].reshape(b, self.c, h, k)[..., : self.split]
        m1 = y[:, :, 1].reshape(b, self.c, h, k).index_select(2, self.neg).flip(-1).conj()
        return torch.cat([m0, m1], dim=-1)


class _Spectral:
    """A block lower-bidiagonal operator in the tiers' group coordinates: per tier ``i`` the stacked matrix
    ``[Mᵢ; Cᵢ]`` (``(G, n + c_{i+1}, n)``) of its diagonal block and its coupling into tier ``i + 1``.

    With ``substitute`` the coupling acts on the *output* of tier ``i`` (a block forward substitution,
    the resolvent); otherwise on its input (the product ``W``). Transposes need no extra factorisation.
    """

    def __init__(self, tiers: Sequence[_Tier], mats: Sequence[Tensor], substitute: bool) -> None:
        self.tiers, self.mats, self.substitute = list(tiers), list(mats), substitute

    @cached_property
    def mats_t(self) -> list[Tensor]:
        """``[Mᵢᴴ, 4Cᵢᴴ]`` per tier (the 4: a coarse spectrum has a quarter of the fine one's frequencies)."""
        out = []
        for t, mat in zip(self.tiers, self.mats, strict=True):
            mh = mat.mH
            out.append(torch.cat([mh[..., : t.n], 4.0 * mh[..., t.n :]], dim=-1).contiguous())
        return out

    def apply(self, vs: Sequence[Tensor]) -> list[Tensor]:
        outs, incoming = [], None
        for t, mat, v in zip(self.tiers, self.mats, vs, strict=True):
            v_hat = torch.fft.rfft2(v)
            if incoming is not None and self.substitute:
                v_hat = v_hat + incoming
            r = mat @ t.gather(v_hat)
            y_hat = t.scatter(r[:, : t.n])
            if incoming is not None and not self.substitute:
                y_hat = y_hat + incoming
            # the coupling lands on the next tier's rfft2 spectrum, (H/2, ⌊W/4⌋ + 1): one row a group
            incoming = _from_per_frequency(r[:, t.n :], t.half[0], t.cols) if t.grouped else None
            outs.append(torch.fft.irfft2(y_hat, s=t.size))
        return outs

    def apply_T(self, vs: Sequence[Tensor]) -> list[Tensor]:
        outs, after = [], None  # after: tier i + 1's output (substitute) or input, rfft2 spectrum
        for t, mat_t, v in zip(self.tiers[::-1], self.mats_t[::-1], vs[::-1], strict=True):
            v_hat = torch.fft.rfft2(v)
            g = t.gather(v_hat)
            if after is not None:
                g = torch.cat([g, _per_frequency(after)], dim=1)
            y_hat = t.scatter(mat_t @ g)
            after = y_hat if self.substitute else v_hat
            outs.append(torch.fft.irfft2(y_hat, s=t.size))
        return outs[::-1]


def _strided_T(z: Tensor, kernel: Tensor) -> Tensor:
    """Adjoint of :func:`_strided`: a stride-2 transposed convolution on the padded grid, whose border is
    then folded back onto the circle."""
    p = kernel.shape[-1] // 2
    y = F.conv_transpose2d(z, kernel, stride=2, output_padding=1)
    for dim in (-2, -1):
        n = y.shape[dim] - 2 * p
        core = y.narrow(dim, p, n)
        if p:
            pad = [0, 0] * (-dim - 1)
            core = (core + F.pad(y.narrow(dim, n + p, p), (*pad, 0, n - p))
                    + F.pad(y.narrow(dim, 0, p), (*pad, n - p, 0)))
        y = core
    return y


class _Kernels:
    """The effective kernels of one parameter value: ``A_ii``, ``A_{i+1,i}`` and the skew ``Bᵢ − Bᵢᵀ``."""

    def __init__(self, diag: Sequence[Tensor], down: Sequence[Tensor], skew: Sequence[Tensor]) -> None:
        self.diag, self.down, self.skew = list(diag), list(down), list(skew)

    def spatial_W(self, m: float, zs: Sequence[Tensor]) -> list[Tensor]:
        """``W z`` tier by tier with circular convolutions in space (differentiable in the kernels)."""
        down = [_strided(z, k) for z, k in zip(zs[:-1], self.down, strict=True)]  # A_{i+1,i} zᵢ, used twice
        out = []
        for i, z in enumerate(zs):
            a = self.diag[i]
            w = circular_conv(z, self.skew[i]) - circular_conv(circular_conv(z, a), conv_transpose_kernel(a))
            w = w + (1.0 - m) * z
            if i < len(down):
                w = w - _strided_T(down[i], self.down[i])
            if i > 0:
                w = w - 2.0 * circular_conv(down[i - 1], conv_transpose_kernel(a))
            out.append(w)
        return out

    def spectral(self, m: float, tiers: Sequence[_Tier]) -> list[Tensor]:
        """``[Wᵢᵢ; W_{i+1,i}]`` per tier in group coordinates (see :class:`_Spectral`)."""
        out = []
        for i, t in enumerate(tiers):
            full = t.grouped
            a_hat = kernel_spectrum(self.diag[i], t.size, full=full)
            d = (1.0 - m) * torch.eye(t.c, dtype=a_hat.dtype, device=a_hat.device)
            d = d - a_hat.mH @ a_hat + kernel_spectrum(self.skew[i], t.size, full=full)
            if not full:
                out.append(d.reshape(t.groups, t.c, t.c))
                continue
            d = t.members(d)  # (P, Q', 4, c, c)
            blk = torch.zeros(*d.shape[:2], t.n, t.n, dtype=d.dtype, device=d.device)
            for j in range(4):
                blk[..., j * t.c : (j + 1) * t.c, j * t.c : (j + 1) * t.c] = d[:, :, j]
            p = t.members(kernel_spectrum(self.down[i], t.size, full=True))  # (P, Q', 4, c', c)
            p = p.permute(0, 1, 3, 2, 4).reshape(*p.shape[:2], p.shape[3], t.n)
            coupling = -0.5 * kernel_spectrum(self.diag[i + 1], tiers[i + 1].size).mH @ p
            out.append(torch.cat([blk - 0.25 * (p.mH @ p), coupling], dim=-2).reshape(t.groups, -1, t.n))
        return out


class MultiTierResolvent(Resolvent):
    """``(I + α(I − W))⁻¹`` by block forward substitution, each diagonal block inverted per group:
    ``[Rᵢ; αCᵢRᵢ]`` with ``Rᵢ = ((1 + α)I − αMᵢ)⁻¹``."""

    def __init__(self, op: MultiTierFrozenOperator, alpha: float) -> None:
        super().__init__(alpha)
        self.op = op
        mats = []
        for t, mat in zip(op.tiers, op.spectral.mats, strict=True):
            eye = torch.eye(t.n, dtype=mat.dtype, device=mat.device)
            inv = torch.linalg.inv((1.0 + alpha) * eye - alpha * mat[:, : t.n])
            mats.append(torch.cat([inv, alpha * (mat[:, t.n :] @ inv)], dim=1))
        self.spectral = _Spectral(op.tiers, mats, substitute=True)

    def apply(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        return _join(self.spectral.apply(self.op.split(v)), add)

    def apply_T(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        return _join(self.spectral.apply_T(self.op.split(v)), add)


class MultiTierFrozenOperator(FrozenOperator):
    """``W`` of :class:`MultiTierMonotone` at fixed kernels, applied in frequency."""

    def __init__(self, kernels: _Kernels, m: float, channels: Sequence[int], size: tuple[int, int]) -> None:
        a0 = kernels.diag[0]
        self.channels = list(channels)
        self.sizes = _tier_sizes(size, len(channels))
        self.numels = [c * h * w for c, (h, w) in zip(self.channels, self.sizes, strict=True)]
        super().__init__(m, (sum(self.numels),), a0.dtype, a0.device)
        last = len(channels) - 1
        self.tiers = [_Tier(c, s, i < last, a0.device)
                      for i, (c, s) in enumerate(zip(channels, self.sizes, strict=True))]
        self.spectral = _Spectral(self.tiers, kernels.spectral(m, self.tiers), substitute=False)

    def split(self, z: Tensor) -> list[Tensor]:
        return _split(z, self.channels, self.sizes)

    def W(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        return _join(self.spectral.apply(self.split(z)), add)

    def WT(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        return _join(self.spectral.apply_T(self.split(z)), add)

    def _build_resolvent(self, alpha: float) -> Resolvent:
        return MultiTierResolvent(self, alpha)

    def _norm_I_minus_W(self) -> float:
        """``max ‖I − Wᵢᵢ‖ + max ‖W_{i+1,i}‖`` (exact blocks from their spectra): a bound of ``‖I − W‖₂``.

        Per group, ``‖W_{i+1,i}‖ = 2‖Cᵢ‖`` (a coarse frequency carries four times a fine one's energy)."""
        diag = sub = 0.0
        for t, mat in zip(self.tiers, self.spectral.mats, strict=True):
            mat = mat.to(torch.complex128)
            eye = torch.eye(t.n, dtype=mat.dtype, device=mat.device)
            diag = max(diag, float(torch.linalg.matrix_norm(eye - mat[:, : t.n], ord=2).max()))
            if t.grouped:
                sub = max(sub, 2.0 * float(torch.linalg.matrix_norm(mat[:, t.n :], ord=2).max()))
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
        sizes = _tier_sizes(self.size, len(self.channels))
        return _join(self._kernels(tensors).spatial_W(self.m, _split(z, self.channels, sizes)))

    def build(self, tensors: Sequence[Tensor]) -> MultiTierFrozenOperator:
        return self._frozen_like(tensors)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={self.size}, kernel_size={self.kernel_size}, m={self.m}"

