"""The per-channel input normalisation ``x ↦ (x − mean)/std`` of images on the pixel scale ``[0, 1]``.

Robustness radii are stated on the pixel scale; certificates, attacks and certified training map them to the
model's (normalised) input through this object, channel by channel: an ℓ∞ ball of radius ``ε`` becomes a box
of half-width ``ε/std_c`` in channel ``c``, and an ℓ2 bound is that of ``U·diag(1/std)``, the input map
composed with the normalisation (not ``‖U‖/min std``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import InputError


@dataclass(frozen=True)
class Normalization:
    """``(x − mean)/std`` per channel (a callable on pixel-scale images ``N × C × …``)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != len(self.std) or not self.std:
            raise InputError(f"a normalisation needs one mean and one std per channel, got {self.mean}, {self.std}")
        if not all(s > 0 and math.isfinite(s) for s in self.std) or not all(map(math.isfinite, self.mean)):
            raise InputError(f"a normalisation needs finite means and std > 0, got {self.mean}, {self.std}")

    @property
    def channels(self) -> int:
        return len(self.std)

    def _view(self, values: tuple[float, ...], like: Tensor) -> Tensor:
        if like.dim() < 2 or like.shape[1] != self.channels:
            raise InputError(f"images of {self.channels} channel(s) as N × C × …, got shape {tuple(like.shape)}")
        shape = (1, -1, *[1] * (like.dim() - 2))
        return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(shape)

    def __call__(self, pixels: Tensor) -> Tensor:
        """The model input of images on the pixel scale (differentiable)."""
        return (pixels - self._view(self.mean, pixels)) / self._view(self.std, pixels)

    def invert(self, x: Tensor) -> Tensor:
        """The pixels of a model input: ``x·std + mean`` per channel."""
        return x * self._view(self.std, x) + self._view(self.mean, x)

    def pixels(self, images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Images on the pixel scale: ``uint8`` ones divided by 255, others as they are (in ``dtype``)."""
        return images.to(dtype) / 255.0 if images.dtype == torch.uint8 else images.to(dtype)

    def box(self, pixels: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        """The ℓ∞ ball of radius ``eps`` (pixel scale) around ``pixels``, cut to ``[0, 1]``, as a box ``[lo, hi]``
        of model inputs."""
        return self((pixels - eps).clamp(0.0, 1.0)), self((pixels + eps).clamp(0.0, 1.0))

    def inverse_std(self, like: Tensor) -> Tensor:
        """``1/std`` per channel, shape ``(C,)``, in ``like``'s dtype and device."""
        return 1.0 / torch.as_tensor(self.std, dtype=like.dtype, device=like.device)

