"""Helpers shared by the classifiers' certificates (SPEC 5)."""

from __future__ import annotations

import torch
from torch import nn

from ..operators.conv import kernel_spectrum


def circular_conv_norm(conv: nn.Conv2d, size: tuple[int, int]) -> float:
    """``‖U‖₂`` of a stride-1 circular convolution on ``size`` images: the largest singular value of its
    per-frequency matrices."""
    spectrum = kernel_spectrum(conv.weight.detach().double(), size)
    return float(torch.linalg.matrix_norm(spectrum, ord=2).max())
