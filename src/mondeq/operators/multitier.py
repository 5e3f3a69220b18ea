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
``rfft2``/``irfft2`` pair per tier and one batched product per tier (two for the transposes).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from functools import cached_property
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .base import FrozenOperator, MonotoneOperator, Resolvent
from .guarantees import StronglyMonotone
from .spectral import (
    adjoint_product,
    circular_conv,
    conv_transpose_kernel,
    half_spectrum_weights,
    kernel_spectrum,
    normalized_kernel,
)


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


class _Tier:
    """Index bookkeeping of one tier's ``rfft2`` spectrum ``(batch, c, H, W')``, ``W' = W//2 + 1``.

    A grouped tier (every tier but the last) is gathered into its alias groups, ``(batch, G, 4c)`` with
    ``G = H/2 · (⌊W/4⌋ + 1)`` (the ``rfft2`` half of the coarse spectrum) and member ``2a + b`` holding
    frequency ``(p + aH/2, q + bW/2)`` of group ``(p, q)`` (members ``b = 1`` are read as the conjugates of
    ``−f``: all but those of column ``W/2`` lie outside the ``rfft2`` half); the last tier, one frequency a
    group, into ``(batch, H · W', c)``.
    Each sample's ``c × H · W'`` block fits in cache, so both directions are single gathers.
    """

    def __init__(self, channels: int, size: tuple[int, int], grouped: bool, device: torch.device) -> None:
        self.c, self.size, self.grouped = channels, size, grouped
        h, w = size
        w_half = w // 2 + 1
        self.freqs = h * w_half
        if not grouped:
            self.groups, self.n = self.freqs, channels
            return
        hh, wh = h // 2, w // 2
        k = wh // 2 + 1  # the rfft2 columns of the coarse spectrum
        self.groups, self.n = hh * k, 4 * channels
        ar = torch.arange
        p, q, a, b = ar(hh)[:, None, None, None], ar(k)[None, :, None, None], ar(2)[:, None], ar(2)
        row = a * hh + p
        src_row, src_col = torch.where(b == 0, row, -row % h), torch.where(b == 0, q, wh - q)
        self.take = (src_row * w_half + src_col).reshape(-1).to(device)  # (G · 4), in (p, q, a, b) order
        r, col = ar(h)[:, None], ar(w_half)[None, :]
        mirrored = col >= wh - k + 1  # rfft2 columns read back from members b = 1, conjugated
        r_src = torch.where(mirrored, -r % h, r)
        q_src = torch.where(mirrored, wh - col, col)
        self.put_group = ((r_src % hh) * k + q_src).reshape(-1).to(device)
        self.put_member = (2 * (r_src // hh) + mirrored.long()).reshape(-1).to(device)
        self.conj_from = int(wh - k + 1)

    def members_of(self, full: Tensor) -> Tensor:
        """A full ``fft2`` spectrum ``(H, W, …)`` → its kept groups ``(H/2, ⌊W/4⌋ + 1, 4, …)``."""
        h, w = self.size
        k = self.groups // (h // 2)
        x = full.reshape(2, h // 2, 2, w // 2, *full.shape[2:])
        x = x.permute(1, 3, 0, 2, *range(4, x.dim()))[:, :k]
        return x.reshape(h // 2, k, 4, *full.shape[2:])

    def gather(self, x_hat: Tensor) -> Tensor:
        """``rfft2`` spectrum ``(batch, c, H, W')`` → ``(batch, G, n)``, contiguous."""
        per_freq = x_hat.reshape(x_hat.shape[0], self.c, self.freqs).transpose(1, 2)  # (batch, H · W', c)
        if not self.grouped:
            return per_freq.contiguous()
        g = per_freq[:, self.take]  # (batch, G · 4, c)
        torch.view_as_real(g.view(g.shape[0], self.groups, 2, 2, self.c))[:, :, :, 1, :, 1].neg_()  # conj, b = 1
        return g.view(g.shape[0], self.groups, self.n)

    def scatter(self, r: Tensor) -> Tensor:
        """``(G, batch, ≥ n)`` (the first ``n`` columns: this tier) → the ``rfft2`` spectrum, as a
        ``(batch, c, H, W')`` view (of a new ``(batch, H · W', c)`` tensor, or of ``r`` for the last tier)."""
        b = r.shape[1]
        h, w = self.size
        if self.grouped:
            by_member = r.transpose(0, 1)[..., : self.n].unflatten(-1, (4, self.c))  # (batch, G, 4, c)
            y = by_member[:, self.put_group, self.put_member]  # (batch, H · W', c)
            torch.view_as_real(y.view(b, h, w // 2 + 1, self.c))[:, :, self.conj_from :, :, 1].neg_()
        else:
            y = r.transpose(0, 1)
        return y.unflatten(1, (h, w // 2 + 1)).permute(0, 3, 1, 2)


def _tiers(channels: Sequence[int], size: tuple[int, int], device: torch.device) -> tuple[_Tier, ...]:
    """The tiers' index maps, built once per geometry and device (not on every parameter update)."""
    return _tier_maps(tuple(channels), tuple(size), torch.device(device))


@functools.lru_cache(maxsize=32)
def _tier_maps(channels: tuple[int, ...], size: tuple[int, int], device: torch.device) -> tuple[_Tier, ...]:
    sizes = _tier_sizes(size, len(channels))
    last = len(channels) - 1
    return tuple(_Tier(c, hw, i < last, device) for i, (c, hw) in enumerate(zip(channels, sizes, strict=True)))


class _Spectral:
    """A block lower-bidiagonal operator in the tiers' group coordinates: per tier ``i`` the stacked matrix
    ``[Mᵢ; Cᵢ]`` (``(G, n + c_{i+1}, n)``) of its diagonal block and its coupling into tier ``i + 1``,
    kept as its transpose: the rows of a batch are multiplied from the right, ``ĝᵀ[Mᵢ; Cᵢ]ᵀ``.

    With ``substitute`` the coupling acts on the *output* of tier ``i`` (a block forward substitution,
    the resolvent); otherwise on its input (the product ``W``). Transposes need no extra factorisation.
    """

    def __init__(self, tiers: Sequence[_Tier], mats: Sequence[Tensor], substitute: bool) -> None:
        self.tiers, self.substitute = list(tiers), substitute
        self.right = [mat.transpose(-2, -1).contiguous() for mat in mats]

    @property
    def mats(self) -> list[Tensor]:
        """``[Mᵢ; Cᵢ]`` per tier (views)."""
        return [r.transpose(-2, -1) for r in self.right]

    @cached_property
    def right_T(self) -> list[Tensor]:
        """``[Mᵢᴴ, 4Cᵢᴴ]ᵀ = conj([Mᵢ; 4Cᵢ])`` per tier (the 4: a coarse spectrum has a quarter of the fine
        one's frequencies)."""
        out = []
        for t, mat in zip(self.tiers, self.mats, strict=True):
            out.append(torch.cat([mat[:, : t.n], 4.0 * mat[:, t.n :]], dim=1).conj().resolve_conj())
        return out

    def apply(self, vs: Sequence[Tensor]) -> list[Tensor]:
        outs, incoming = [], None  # incoming: tier i's coupling into tier i + 1, (G_i = H'W'', batch, c')
        for t, right, v in zip(self.tiers, self.right, vs, strict=True):
            v_hat = torch.fft.rfft2(v)
            if incoming is not None and self.substitute:
                v_hat.view(v.shape[0], t.c, t.freqs).add_(incoming.permute(1, 2, 0))
            r = torch.bmm(t.gather(v_hat).transpose(0, 1), right)  # (G, batch, n + c')
            del v_hat
            y_hat = t.scatter(r)
            if incoming is not None and not self.substitute:
                y_hat = y_hat + incoming.permute(1, 2, 0).view(y_hat.shape)
            incoming = r[..., t.n :] if t.grouped else None
            outs.append(torch.fft.irfft2(y_hat, s=t.size))
        return outs

    def apply_T(self, vs: Sequence[Tensor]) -> list[Tensor]:
        outs, after = [], None  # after: tier i + 1's output (substitute) or input spectrum, (batch, H'W'', c')
        for t, right_t, v in zip(self.tiers[::-1], self.right_T[::-1], vs[::-1], strict=True):
            v_hat = torch.fft.rfft2(v)
            g = t.gather(v_hat).transpose(0, 1)  # (G, batch, n)
            r = torch.bmm(g, right_t[:, : t.n])
            if after is not None:
                r = torch.baddbmm(r, after.transpose(0, 1), right_t[:, t.n :])
            y_hat = t.scatter(r)
            if self.substitute:
                after = y_hat.permute(0, 2, 3, 1).reshape(v.shape[0], t.freqs, t.c)
            else:
                after = g.transpose(0, 1) if not t.grouped else v_hat.flatten(2).transpose(1, 2)
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
            d = d - adjoint_product(a_hat, a_hat) + kernel_spectrum(self.skew[i], t.size, full=full)
            if not full:
                out.append(d.reshape(t.groups, t.c, t.c))
                continue
            d = t.members_of(d)  # (P, Q', 4, c, c)
            blk = torch.zeros(*d.shape[:2], t.n, t.n, dtype=d.dtype, device=d.device)
            for j in range(4):
                blk[..., j * t.c : (j + 1) * t.c, j * t.c : (j + 1) * t.c] = d[:, :, j]
            p = t.members_of(kernel_spectrum(self.down[i], t.size, full=True))  # (P, Q', 4, c', c)
            p = p.permute(0, 1, 3, 2, 4).reshape(*p.shape[:2], p.shape[3], t.n)
            coupling = -0.5 * adjoint_product(kernel_spectrum(self.diag[i + 1], tiers[i + 1].size), p)
            out.append(torch.cat([blk - 0.25 * adjoint_product(p, p), coupling], dim=-2).reshape(t.groups, -1, t.n))
        return out


class MultiTierResolvent(Resolvent):
    """``(I + α(I − W))⁻¹`` by block forward substitution, each diagonal block inverted per group:
    ``[Rᵢ; αCᵢRᵢ]`` with ``Rᵢ = ((1 + α)I − αMᵢ)⁻¹``."""

    def __init__(self, op: MultiTierFrozenOperator, alpha: float) -> None:
        super().__init__(alpha)
        self.channels, self.sizes = op.channels, op.sizes  # not the operator: it caches this (no cycle)
        mats = []
        for t, mat in zip(op.tiers, op.spectral.mats, strict=True):
            eye = torch.eye(t.n, dtype=mat.dtype, device=mat.device)
            inv = torch.linalg.inv((1.0 + alpha) * eye - alpha * mat[:, : t.n])
            mats.append(torch.cat([inv, alpha * (mat[:, t.n :] @ inv)], dim=1))
        self.spectral = _Spectral(op.tiers, mats, substitute=True)

    def apply(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        return _join(self.spectral.apply(_split(v, self.channels, self.sizes)), add)

    def apply_T(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        return _join(self.spectral.apply_T(_split(v, self.channels, self.sizes)), add)


def _norm_I_minus_W(tiers: Sequence[_Tier], mats: Sequence[Tensor]) -> float:
    """``max ‖I − Wᵢᵢ‖ + max ‖W_{i+1,i}‖`` (exact blocks from their spectra): a bound of ``‖I − W‖₂``.

    Per group, ``‖W_{i+1,i}‖ = 2‖Cᵢ‖`` (a coarse frequency carries four times a fine one's energy)."""
    diag = sub = 0.0
    for t, mat in zip(tiers, mats, strict=True):
        mat = mat.to(torch.complex128)
        eye = torch.eye(t.n, dtype=mat.dtype, device=mat.device)
        diag = max(diag, float(torch.linalg.matrix_norm(eye - mat[:, : t.n], ord=2).max()))
        if t.grouped:
            sub = max(sub, 2.0 * float(torch.linalg.matrix_norm(mat[:, t.n :], ord=2).max()))
    return (diag + sub) * (1.0 + 1e-9)


class MultiTierFrozenOperator(FrozenOperator):
    """``W`` of :class:`MultiTierMonotone` at fixed kernels, applied in frequency."""

    def __init__(self, kernels: _Kernels, m: float, channels: Sequence[int], size: tuple[int, int]) -> None:
        a0 = kernels.diag[0]
        self.channels = list(channels)
        self.sizes = _tier_sizes(size, len(channels))
        self.numels = [c * h * w for c, (h, w) in zip(self.channels, self.sizes, strict=True)]
        tiers = _tiers(channels, size, a0.device)
        spectral = _Spectral(tiers, kernels.spectral(m, tiers), substitute=False)
        # the guarantee computes ‖I − W‖₂ from the blocks, not from the operator: no reference cycle
        norm = functools.partial(_norm_I_minus_W, tiers, spectral.mats)
        super().__init__(StronglyMonotone(m, norm), (sum(self.numels),), a0.dtype, a0.device)
        self.tiers, self.spectral = tiers, spectral

    def split(self, z: Tensor) -> list[Tensor]:
        return _split(z, self.channels, self.sizes)

    def W(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        return _join(self.spectral.apply(self.split(z)), add)

    def WT(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        return _join(self.spectral.apply_T(self.split(z)), add)

    def _build_resolvent(self, alpha: float) -> Resolvent:
        return MultiTierResolvent(self, alpha)



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
        self.channels, self.size, self.kernel_size = (
            [int(c) for c in channels], cast(tuple[int, int], tuple(size)), kernel_size
        )
        levels = len(self.channels)
        if levels < 2 or min(self.channels) < 1 or kernel_size % 2 == 0:
            raise InputError(f"need ≥ 2 tiers of ≥ 1 channel and an odd kernel, got {channels}, {kernel_size}")
        if any(s % 2 ** (levels - 1) for s in self.size):
            raise InputError(f"image size {tuple(size)} is not divisible by 2^{levels - 1} for {levels} tiers")
        if kernel_size > min(self.size) >> (levels - 1):
            raise InputError(f"a {kernel_size}×{kernel_size} kernel does not fit the last tier")
        kw: dict[str, Any] = {"dtype": dtype, "device": device}

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

    def vjp(
        self, tensors: Sequence[Tensor], z: Tensor, u: Tensor, need: Sequence[bool]
    ) -> list[Tensor | None]:
        """In frequency, as for the single convolution: by Parseval, per tier ``i``,
        ``⟨u, Wz⟩ = Σᵢ Σ_g ω_g/(HᵢWᵢ) Re tr([Mᵢ; Cᵢ]_g Pᵢ_g)`` with ``Pᵢ_g = Σ_batch ẑᵢ_g [ûᵢ_g; 4û_{i+1}(g)]ᴴ``
        over the kept groups (``ω_g = 2`` for a group that also stands for its mirror; the 4: tier ``i + 1``
        has a quarter of the frequencies), differentiated through the small group matrices instead of the
        spatial convolutions of :meth:`apply_W`."""
        grads: list[Tensor | None] = [None] * len(tensors)
        wanted = [i for i, n in enumerate(need) if n]
        if not wanted:
            return grads
        tiers = _tiers(self.channels, self.size, z.device)
        sizes = [t.size for t in tiers]
        with torch.no_grad():
            z_hats = [torch.fft.rfft2(x) for x in _split(z, self.channels, sizes)]
            u_hats = [torch.fft.rfft2(x) for x in _split(u, self.channels, sizes)]
            ps = []
            for i, t in enumerate(tiers):
                ug = t.gather(u_hats[i])  # (batch, G, n)
                if t.grouped:  # tier i + 1's frequencies are this tier's groups
                    ug = torch.cat([ug, 4.0 * u_hats[i + 1].flatten(2).transpose(1, 2)], dim=-1)
                p_t = torch.bmm(ug.transpose(0, 1).mH, t.gather(z_hats[i]).transpose(0, 1))  # Pᵀ: (G, n + c', n)
                h, w = t.size
                cols = half_spectrum_weights(w // 2 if t.grouped else w, z)  # a group: its coarse column
                weight = cols.repeat(t.groups // len(cols)) / (h * w)
                ps.append(p_t * weight[:, None, None])
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(n) for t, n in zip(tensors, need, strict=True)]
            mats = self._kernels(leaves).spectral(self.m, tiers)
            objective = cast(Tensor, sum((mat * p).sum().real for mat, p in zip(mats, ps, strict=True)))
            found = torch.autograd.grad(objective, [leaves[i] for i in wanted])
        for i, g in zip(wanted, found, strict=True):
            grads[i] = g
        return grads

    def build(self, tensors: Sequence[Tensor]) -> MultiTierFrozenOperator:
        return self._frozen_like(tensors)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={self.size}, kernel_size={self.kernel_size}, m={self.m}"

