"""The single-convolution operator (SPEC 4.2): W, Wᵀ, the FFT resolvent and ‖I − W‖₂ against their dense
matrices, monotonicity for random kernels, solvers and gradients through the convolutional model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import assert_vjp_matches_autograd, dense_equilibrium, gradcheck_module
from hypothesis import given, settings
from hypothesis import strategies as st

import mondeq
from mondeq import Anderson, BorderReLU, ConvMonDEQ, ConvMonotone, ForwardBackward, PeacemanRachford, ReLU


def _dense(fn, shape: tuple[int, ...], dtype=torch.float64) -> torch.Tensor:
    """The matrix of a linear map on ``shape``, by applying it to the identity (column j = map(e_j))."""
    n = int(torch.tensor(shape).prod())
    eye = torch.eye(n, dtype=dtype).view(n, *shape)
    return fn(eye).reshape(n, n).T


def _operator(c: int, size: tuple[int, int], k: int, seed: int, dtype=torch.float64, scale: float = 1.0):
    torch.manual_seed(seed)
    op = ConvMonotone(c, size, k, m=0.5, dtype=dtype)
    with torch.no_grad():
        op.A.mul_(scale)
        op.B.normal_()
        op.g.normal_(0, 3)
        op.h.normal_(0, 3)
    return op


CASES = list(itertools.product([2, 3], [(6, 6), (7, 8), (8, 5)], [3, 5]))


@pytest.mark.parametrize("c,size,k", CASES)
def test_products_and_resolvent_match_dense(c: int, size: tuple[int, int], k: int) -> None:
    op = _operator(c, size, k, seed=c + k)
    f = op.frozen()
    shape = (c, *size)
    w = _dense(f.W, shape)
    torch.testing.assert_close(_dense(f.WT, shape), w.T, atol=1e-13, rtol=0)
    torch.testing.assert_close(_dense(op, shape).detach(), w, atol=1e-13, rtol=0)
    n = w.shape[0]
    for alpha in (0.2, 1.0, 3.0):
        r = f.resolvent(alpha)
        ref = torch.linalg.inv((1 + alpha) * torch.eye(n, dtype=w.dtype) - alpha * w)
        torch.testing.assert_close(_dense(r.apply, shape), ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(_dense(r.apply_T, shape), ref.T, atol=1e-12, rtol=0)
        torch.testing.assert_close(_dense(f.transpose().resolvent(alpha).apply, shape), ref.T,
                                   atol=1e-12, rtol=0)
    exact = torch.linalg.matrix_norm(torch.eye(n, dtype=w.dtype) - w, 2)
    assert exact <= f.lipschitz <= exact * (1 + 1e-8)
    assert 0.9 * exact <= f.norm_estimate() <= exact * (1 + 1e-12)  # a lower estimate, close (for step sizes)


def test_float32_resolvent() -> None:
    op = _operator(3, (8, 8), 3, seed=0, dtype=torch.float32)
    f = op.frozen()
    w = _dense(f.W, (3, 8, 8), torch.float32).double()
    ref = torch.linalg.inv(2 * torch.eye(192, dtype=torch.float64) - w)
    got = _dense(f.resolvent(1.0).apply, (3, 8, 8), torch.float32).double()
    assert (got - ref).abs().max() <= 1e-5


@settings(max_examples=25, deadline=None)
@given(c=st.integers(1, 3), h=st.integers(3, 7), k=st.sampled_from([1, 3]), seed=st.integers(0, 999),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_symmetric_part_is_at_least_m(c: int, h: int, k: int, seed: int, scale: float) -> None:
    op = _operator(c, (h, h + 1), k, seed, scale=scale)
    w = _dense(op.frozen().W, (c, h, h + 1))
    sym = torch.eye(w.shape[0], dtype=w.dtype) - (w + w.T) / 2
    assert torch.linalg.eigvalsh(sym).min() >= 0.5 - 1e-9 * (1 + torch.linalg.matrix_norm(w, 2))


@pytest.mark.parametrize("solver", [
    PeacemanRachford(tol=1e-11), ForwardBackward(tol=1e-11, max_iter=20_000),
    Anderson(PeacemanRachford(tol=1e-11)), mondeq.DouglasRachford(tol=1e-11, max_iter=2000),
], ids=["pr", "fb", "pr+anderson", "dr"])
def test_solvers_on_the_conv_operator(solver) -> None:
    op = _operator(2, (6, 7), 3, seed=5)
    torch.manual_seed(6)
    y = torch.randn(3, 2, 6, 7, dtype=torch.float64)
    sol = mondeq.solve(op, ReLU(), y, solver)
    w = _dense(op.frozen().W, (2, 6, 7))
    ref = dense_equilibrium(w, y.flatten(1), start=sol.z.flatten(1)).view_as(y)
    torch.testing.assert_close(sol.z, ref, atol=1e-8, rtol=0)


def test_defaults_and_bad_geometry() -> None:
    """The paper's defaults (``m = 1``, a 3 × 3 kernel); even or oversized kernels are refused."""
    op = ConvMonotone(2, (6, 6))
    assert op.m == 1.0 and op.kernel_size == 3 and op.frozen().m == 1.0
    for k, size in ((4, (6, 6)), (0, (6, 6)), (7, (6, 6)), (5, (4, 8))):
        with pytest.raises(mondeq.InputError):
            ConvMonotone(2, size, k)


def test_border_relu() -> None:
    act = BorderReLU(1)
    v = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    out = act.prox(v, 0.3)
    assert (out[..., 0, :] == 0).all() and (out[..., :, -1] == 0).all()
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.relu(v[..., 1:-1, 1:-1]))
    d = act.derivative(v)
    assert (d[..., 0, :] == 0).all() and torch.equal(d[..., 2, 2], (v[..., 2, 2] > 0).double())
    # differentiable by autograd too (unrolled backpropagation, generic DEQ layers): the same derivative
    v.requires_grad_(True)
    (grad,) = torch.autograd.grad(act.prox(v, 0.3).sum(), v)
    assert torch.equal(grad, d)
    with pytest.raises(mondeq.InputError):
        act.prox(torch.zeros(1, 1, 2, 2), 1.0)


@pytest.mark.parametrize("solver,shape", [
    (PeacemanRachford(tol=1e-12, max_iter=3000), (1, 4, 4)),
    (PeacemanRachford(tol=1e-12, max_iter=3000), (1, 4, 5)),  # odd width: the half spectrum's weights
    (ForwardBackward(tol=1e-12, max_iter=50_000), (1, 4, 4)),
], ids=["pr", "pr-odd", "fb"])
def test_gradcheck_through_the_conv_model(solver, shape) -> None:
    torch.manual_seed(7)
    model = ConvMonDEQ(shape, 3, channels=2, pad=1, pool=2, m=0.5, solver=solver).double()
    if isinstance(solver, ForwardBackward):  # smaller g, h: ‖I − W‖ nearer m, 4× fewer iterations
        with torch.no_grad():
            model.mon.operator.h.fill_(0.3)
            model.mon.operator.g.fill_(math.log(math.expm1(0.3)))
    assert gradcheck_module(model, torch.randn(2, *shape, dtype=torch.float64))


def test_paper_sizes() -> None:
    sizes = {((1, 28, 28), "conv"): 84_460, ((3, 32, 32), "conv"): 172_218,
             ((3, 32, 32), "conv-large"): 853_612}
    for (shape, name), count in sizes.items():
        model = mondeq.build_model(name, shape, 10)
        assert sum(p.numel() for p in model.parameters()) == count


def test_conv_model_trains_from_the_command_line(tmp_path) -> None:
    from mondeq.cli import main

    code = main(["train", "--model", "conv", "--channels", "4", "--epochs", "1", "--train-subset", "64",
                 "--test-subset", "32", "--batch-size", "32", "--no-progress", "--out", str(tmp_path)])
    assert code == 0 and (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


@pytest.mark.parametrize("size", [(6, 6), (5, 7)])
def test_parameter_gradient_in_frequency_equals_autograd_through_the_spatial_convolutions(size) -> None:
    """The closed-form vjp (Parseval over the half spectrum) against autograd through ``apply_W``'s spatial
    circular convolutions, for every parameter; odd and even widths (the half spectrum's weights)."""
    op = _operator(3, size, 3, seed=8)
    torch.manual_seed(9)
    z, u = (torch.randn(4, 3, *size, dtype=torch.float64) for _ in range(2))
    assert_vjp_matches_autograd(op, z, u, atol=1e-11, rtol=1e-10)
