"""The norms and interval maps of the parts a user composes around an equilibrium layer (SPEC 5).

Each supported ``nn.Module`` knows a sound bound of its Lipschitz constant in ℓ2 and in ℓ∞ and, where it is
monotone or affine, the box of its outputs over a box of inputs (rounding included):

* affine: ``nn.Linear``; ``nn.Conv2d`` (groups 1, dilation 1, square kernel) with zero padding and any stride,
  or circular padding of ``k // 2``; ``nn.BatchNorm1d``/``2d`` in evaluation mode (its running statistics).
  ℓ∞: the largest row sum of ``|A|``. ℓ2: ``‖A‖₂`` for ``Linear``; for a convolution the largest singular
  value of its per-frequency matrices on the zero-padded grid (a zero-padded, strided convolution is a
  coordinate restriction of the circular one on that grid applied to the zero-embedded input, both maps of
  norm ≤ 1, so this bounds it; for circular padding it is exact at stride 1);
* elementwise: ``ReLU``, ``LeakyReLU`` (slope in ``[0, 1]``), ``Tanh`` (1-Lipschitz), ``Sigmoid`` (¼);
* pooling without padding or ``ceil_mode``: ``MaxPool2d`` and ``AvgPool2d`` of kernel ``k`` and stride ``s``:
  ℓ∞ 1; ℓ2 ``√c`` and ``√(c/k²)`` with ``c = ⌈k/s⌉²`` the windows an input can fall in (``Σ`` over windows of
  the largest ``|δ|²`` in it is at most ``c‖δ‖²``; an average is ``‖A‖₂ ≤ √(‖A‖₁‖A‖∞)``);
* layout: ``Flatten``, ``Identity``, ``ZeroPad2d`` (isometries).

The input normalisation ``x ↦ (x − mean)/std`` is folded into the first affine part as the scaling
``s = 1/std`` of its input entries (0 on padding, which is not perturbed); a bound of ``A·diag(s')`` with
``s' ≥ s`` entrywise is one of ``A·diag(s)``, so a convolution uses its channel's largest ``s``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..operators.spectral import kernel_spectrum
from ..robustness.interval import linear_box

AFFINE = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
LAYOUT = (nn.Flatten, nn.Identity, nn.ZeroPad2d)
POOLS = (nn.MaxPool2d, nn.AvgPool2d)


class _BatchNormStats(Protocol):
    """The attributes of a batch norm with running statistics (its buffers and parameters, to the type checker)."""

    running_mean: Tensor
    running_var: Tensor
    weight: Tensor | None
    bias: Tensor | None
    eps: float


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _check_conv(conv: nn.Conv2d) -> None:
    k = _pair(conv.kernel_size)
    ok = conv.groups == 1 and _pair(conv.dilation) == (1, 1) and k[0] == k[1] and isinstance(conv.padding, tuple)
    if conv.padding_mode == "circular":
        ok = ok and k[0] % 2 == 1 and _pair(cast(tuple[int, ...], conv.padding)) == (k[0] // 2,) * 2
    elif conv.padding_mode != "zeros":
        ok = False
    if not ok:
        raise InputError(f"no known norm for {conv}: a convolution needs groups 1, dilation 1, a square kernel and "
                         "zero padding (or circular padding of kernel_size // 2, odd kernel)")


def _check_pool(pool: nn.MaxPool2d | nn.AvgPool2d) -> None:
    if _pair(pool.padding) != (0, 0) or pool.ceil_mode or _pair(getattr(pool, "dilation", 1)) != (1, 1):
        raise InputError(f"no known norm for {pool}: pooling needs padding 0, dilation 1 and no ceil_mode")


def check_part(part: nn.Module) -> None:
    """Refuse, in one line, a module whose norms and interval map this module does not know."""
    if isinstance(part, nn.Conv2d):
        _check_conv(part)
    elif isinstance(part, POOLS):
        _check_pool(part)
    elif isinstance(part, nn.LeakyReLU):
        if not 0 <= part.negative_slope <= 1:
            raise InputError(f"no known norm for {part}: the slope must lie in [0, 1]")
    elif isinstance(part, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not part.track_running_stats:
            raise InputError(f"no known norm for {part}: it needs running statistics")
    elif not isinstance(part, (*AFFINE, *LAYOUT, nn.ReLU, nn.Tanh, nn.Sigmoid)):
        raise InputError(f"no known norm for {type(part).__name__}: compose from Linear, Conv2d, BatchNorm (eval), "
                         "ReLU, LeakyReLU, Tanh, Sigmoid, MaxPool2d, AvgPool2d, Flatten, ZeroPad2d")


def _bn_scale(bn: nn.Module) -> Tensor:
    """``γ/√(var + eps)`` per channel of a batch norm's evaluation map."""
    stats = cast(_BatchNormStats, bn)
    scale = torch.rsqrt(stats.running_var + stats.eps)
    return scale * stats.weight if stats.weight is not None else scale


def _channel_view(values: Tensor, like: Tensor) -> Tensor:
    return values.view(1, -1, *[1] * (like.dim() - 2))


def _channel_max(scale: Tensor) -> Tensor:
    """Per channel, the largest input scaling (``scale`` of shape ``(C, …)``)."""
    return scale.flatten(1).amax(1) if scale.dim() > 1 else scale


def abs_map(part: nn.Module) -> Callable[[Tensor], Tensor]:
    """``x ↦ |A|x`` of an affine part (no bias)."""
    if isinstance(part, nn.Linear):
        return lambda x: F.linear(x, part.weight.abs())
    if isinstance(part, nn.Conv2d):
        if part.padding_mode == "circular":
            p = _pair(cast(tuple[int, ...], part.padding))
            return lambda x: F.conv2d(F.pad(x, (p[1], p[1], p[0], p[0]), mode="circular"), part.weight.abs(),
                                      stride=part.stride)
        return lambda x: F.conv2d(x, part.weight.abs(), stride=part.stride, padding=part.padding)
    return lambda x: x * _channel_view(_bn_scale(part).abs(), x)  # batch norm


def _terms(part: nn.Module) -> int:
    """Terms of each output's dot product (the rounding bound of its box)."""
    if isinstance(part, nn.Linear):
        return part.in_features + 1
    if isinstance(part, nn.Conv2d):
        return math.prod(part.weight.shape[1:]) + 1
    return 3


def affine_rows(part: nn.Module, scale: Tensor) -> Tensor:
    """The row sums of ``|A|·diag(s)`` per output unit (``Linear``) or channel (convolution, batch norm), for an
    affine part on inputs scaled by ``s = scale`` (one sample); their maximum is ``‖A·diag(s)‖∞``."""
    if isinstance(part, nn.Linear):
        return (part.weight.abs() * scale.flatten()[None, :]).sum(1)
    if isinstance(part, nn.Conv2d):
        return (part.weight.abs() * _channel_max(scale).view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
    return _bn_scale(part).abs() * _channel_max(scale)


def affine_l2(part: nn.Module, scale: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A bound of ``‖A·diag(s)‖₂`` for inputs of ``shape`` (exact for ``Linear`` and batch norm)."""
    if isinstance(part, nn.Linear):
        return torch.linalg.matrix_norm(part.weight * scale.flatten()[None, :], ord=2)
    if isinstance(part, nn.Conv2d):
        k = part.weight * _channel_max(scale).view(1, -1, 1, 1)
        p = (0, 0) if part.padding_mode == "circular" else _pair(cast(tuple[int, ...], part.padding))
        grid = (shape[1] + 2 * p[0], shape[2] + 2 * p[1])
        return torch.linalg.matrix_norm(kernel_spectrum(k, grid), ord=2).max()
    return affine_rows(part, scale).max()


def affine_inf_to_2(part: nn.Module, scale: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A bound of ``‖A·diag(s)‖∞→2``: ``min(√d‖A·diag(s)‖₂, ‖|A|s‖₂)``, ``d`` the inputs with ``s > 0``."""
    ones = torch.linalg.vector_norm(abs_map(part)(scale[None]))
    return torch.minimum(math.sqrt(int((scale > 0).sum())) * affine_l2(part, scale, shape), ones)


def lipschitz_constant(part: nn.Module, norm: str) -> float:
    """A bound of a non-affine part's Lipschitz constant in ℓ2 (``norm="2"``) or ℓ∞ (``"inf"``)."""
    if isinstance(part, nn.Sigmoid):
        return 0.25
    if isinstance(part, POOLS) and norm == "2":
        k, s = _pair(part.kernel_size), _pair(part.stride or part.kernel_size)
        windows = math.ceil(k[0] / s[0]) * math.ceil(k[1] / s[1])
        return math.sqrt(windows / (k[0] * k[1] if isinstance(part, nn.AvgPool2d) else 1))
    return 1.0


def _bn_eval(bn: nn.Module) -> Callable[[Tensor], Tensor]:
    """A batch norm's evaluation map (its running statistics, whatever its mode; nothing updated)."""
    stats = cast(_BatchNormStats, bn)
    return lambda x: F.batch_norm(x, stats.running_mean, stats.running_var, stats.weight, stats.bias, False, 0.0,
                                  stats.eps)


def part_box(part: nn.Module, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """The box of ``part``'s outputs over inputs in ``[lo, hi]`` (a batch), widened by its rounding;
    differentiable. A batch norm is bounded by its evaluation map, in either mode."""
    if isinstance(part, AFFINE):
        apply = _bn_eval(part) if isinstance(part, (nn.BatchNorm1d, nn.BatchNorm2d)) else part
        return linear_box(apply, abs_map(part), _terms(part), lo, hi)
    f_lo, f_hi = part(lo), part(hi)
    if isinstance(part, (nn.ReLU, nn.MaxPool2d, *LAYOUT)):
        return f_lo, f_hi  # exact: selections and zeros
    eps = torch.finfo(f_lo.dtype).eps
    if isinstance(part, nn.AvgPool2d):  # a sum of n terms rounds by up to (n − 1)u Σ|xᵢ|, relative to the
        terms = math.prod(_pair(part.kernel_size)) + 2  # magnitudes, not to a result that may cancel
        return f_lo - terms * eps * part(lo.abs()), f_hi + terms * eps * part(hi.abs())
    return f_lo - 4 * eps * f_lo.abs(), f_hi + 4 * eps * f_hi.abs()  # Tanh, Sigmoid: a few ulp


def check_bn_eval(parts: list[nn.Module]) -> None:
    """Refuse a certificate through a batch norm in training mode (its forward map is the batch's; the bounds
    are those of its evaluation map, which certified training uses as its objective)."""
    for part in parts:
        if isinstance(part, (nn.BatchNorm1d, nn.BatchNorm2d)) and part.training:
            raise InputError(f"{part} is in training mode: bounds hold for its evaluation map, call .eval()")
