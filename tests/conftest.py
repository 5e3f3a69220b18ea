"""Shared references: independent dense solutions of the equilibrium and its gradient."""

from __future__ import annotations

import torch
from torch import Tensor


def dense_equilibrium(
    weight: Tensor, y: Tensor, slope: float = 0.0, start: Tensor | None = None, iters: int = 60
) -> Tensor:
    """``z = σ(Wz + y)`` for ``σ = LeakyReLU(slope)`` (ReLU: ``slope = 0``) by semismooth Newton.

    Each step fixes the active set, ``z = D(Wz + y)`` with ``D = diag(1 or slope)``, and solves the linear
    system ``(I − DW)z = Dy`` densely in float64. Newton without globalisation can cycle, so it starts from
    ``σ(y)`` and, if that fails, from ``start``. Whatever the start, the result is accepted only if its
    residual is at round-off: the equilibrium is unique, so such a point is the solution.
    """
    w, y = weight.double(), y.double()
    eye = torch.eye(w.shape[0], dtype=w.dtype)
    starts = [torch.where(y > 0, y, slope * y)] + ([start.double()] if start is not None else [])
    for z in starts:
        for _ in range(iters):
            v = z @ w.T + y
            d = torch.where(v > 0, 1.0, torch.full_like(v, slope))
            z_new = torch.linalg.solve(eye - d[:, :, None] * w, (d * y).unsqueeze(-1)).squeeze(-1)
            if torch.equal(z_new, z):
                break
            z = z_new
        v = z @ w.T + y
        residual = (z - torch.where(v > 0, v, slope * v)).abs().max()
        if residual < 1e-10 * (1 + y.abs().max() + z.abs().max()):
            return z
    raise AssertionError(f"dense reference did not converge: {residual}")


def dense_input_gradient(weight: Tensor, z: Tensor, y: Tensor, g: Tensor, slope: float = 0.0) -> Tensor:
    """``∂ℓ/∂y = D(I − WᵀD)⁻¹g`` by a dense solve per sample, float64."""
    w = weight.double()
    v = z.double() @ w.T + y.double()
    d = torch.where(v > 0, 1.0, torch.full_like(v, slope))
    eye = torch.eye(w.shape[0], dtype=w.dtype)
    h = torch.linalg.solve(eye - w.T[None] * d[:, None, :], g.double().unsqueeze(-1)).squeeze(-1)
    return d * h


def gradcheck_module(module: torch.nn.Module, x: Tensor) -> bool:
    """``torch.autograd.gradcheck`` of ``module(x)`` in ``x`` and every parameter (by functional_call)."""
    names = [k for k, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]

    def f(x: Tensor, *ps: Tensor) -> Tensor:
        return torch.func.functional_call(module, dict(zip(names, ps, strict=True)), (x,))

    return torch.autograd.gradcheck(f, (x.detach().requires_grad_(), *params), atol=1e-6, rtol=1e-4)


def assert_vjp_matches_autograd(op, z: Tensor, u: Tensor, atol: float, rtol: float) -> None:
    """An operator's own ``vjp`` against autograd through its ``apply_W`` (the base class's vjp), for every
    tensor ``W`` depends on."""
    from mondeq import MonotoneOperator

    tensors = op.tensors()
    need = [True] * len(tensors)
    fast = op.vjp(tensors, z, u, need)
    ref = MonotoneOperator.vjp(op, tensors, z, u, need)
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
