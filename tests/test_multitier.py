"""The multi-tier operator (SPEC 4.3): block lower-triangular W, its transpose, the resolvent by block
elimination with the 4-frequency coupling, against dense matrices; monotonicity; solvers and gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_vjp_matches_autograd, dense_equilibrium, gradcheck_module
from hypothesis import given, settings
from hypothesis import strategies as st

import mondeq
from mondeq import Anderson, ForwardBackward, MultiTierMonDEQ, MultiTierMonotone, PeacemanRachford, ReLU


def _dense(fn, n: int, dtype=torch.float64) -> torch.Tensor:
    return fn(torch.eye(n, dtype=dtype)).T


def _operator(channels, size, k, seed, dtype=torch.float64, scale: float = 1.0) -> MultiTierMonotone:
    torch.manual_seed(seed)
    op = MultiTierMonotone(channels, size, k, m=0.5, dtype=dtype)
    with torch.no_grad():
        for p in op.parameters():
            p.normal_()
        op.g.mul_(3).add_(torch.log(torch.tensor(scale, dtype=dtype)))
    return op


CASES = [((2, 3), (6, 6), 3), ((1, 2), (6, 8), 3), ((2, 2, 3), (12, 12), 3), ((2, 3), (10, 10), 5),
         ((3, 2, 2, 1), (16, 8), 1)]


@pytest.mark.parametrize("channels,size,k", CASES)
def test_operator_and_resolvent_match_dense(channels, size, k) -> None:
    op = _operator(channels, size, k, seed=len(channels) + k)
    f = op.frozen()
    n = f.shape[0]
    w = _dense(f.W, n)
    torch.testing.assert_close(_dense(f.WT, n), w.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(_dense(op, n).detach(), w, atol=1e-12, rtol=0)
    n1 = f.numels[0]
    assert w[:n1, n1:].abs().max() == 0  # block lower-triangular
    for alpha in (0.3, 1.0, 4.0):
        ref = torch.linalg.inv((1 + alpha) * torch.eye(n, dtype=w.dtype) - alpha * w)
        r = f.resolvent(alpha)
        torch.testing.assert_close(_dense(r.apply, n), ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(_dense(r.apply_T, n), ref.T, atol=1e-12, rtol=0)
    exact = torch.linalg.matrix_norm(torch.eye(n, dtype=w.dtype) - w, 2)
    assert exact <= f.lipschitz
    assert 0.9 * exact <= f.norm_estimate() <= exact * (1 + 1e-12)  # a lower estimate, close (for step sizes)


@pytest.mark.parametrize("channels,size,k", CASES)
def test_parameter_gradient_in_frequency_matches_the_spatial_one(channels, size, k) -> None:
    """``vjp`` (Parseval over the kept alias groups) against autograd through the spatial convolutions."""
    op = _operator(channels, size, k, seed=len(channels) + 2 * k)
    z, u = torch.randn(2, 3, op.shape[0], dtype=torch.float64)
    assert_vjp_matches_autograd(op, z, u, atol=1e-10, rtol=1e-10)
    tensors = op.tensors()
    some = [i % 2 == 0 for i in range(len(tensors))]
    assert [g is None for g in op.vjp(tensors, z, u, some)] == [not n for n in some]


def test_float32_resolvent() -> None:
    op = _operator((2, 3), (8, 8), 3, seed=1, dtype=torch.float32)
    f = op.frozen()
    n = f.shape[0]
    w = _dense(f.W, n, torch.float32).double()
    ref = torch.linalg.inv(2 * torch.eye(n, dtype=torch.float64) - w)
    assert (_dense(f.resolvent(1.0).apply, n, torch.float32).double() - ref).abs().max() <= 1e-5


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 999), scale=st.sampled_from([1e-3, 1.0, 1e3]), levels=st.integers(2, 3))
def test_symmetric_part_is_at_least_m(seed: int, scale: float, levels: int) -> None:
    op = _operator((2, 1, 2)[:levels], (12, 12), 3, seed, scale=scale)
    w = _dense(op.frozen().W, op.shape[0])
    sym = torch.eye(w.shape[0], dtype=w.dtype) - (w + w.T) / 2
    assert torch.linalg.eigvalsh(sym).min() >= 0.5 - 1e-9 * (1 + torch.linalg.matrix_norm(w, 2))


@pytest.mark.parametrize("solver", [PeacemanRachford(tol=1e-11), Anderson(PeacemanRachford(tol=1e-11)),
                                    ForwardBackward(tol=1e-11, max_iter=50_000)], ids=["pr", "pr+anderson", "fb"])
def test_solvers(solver) -> None:
    op = _operator((2, 3), (8, 8), 3, seed=2)
    torch.manual_seed(3)
    y = torch.randn(3, op.shape[0], dtype=torch.float64)
    sol = mondeq.solve(op, ReLU(), y, solver)
    ref = dense_equilibrium(_dense(op.frozen().W, op.shape[0]), y, start=sol.z)
    torch.testing.assert_close(sol.z, ref, atol=1e-8, rtol=0)


def test_gradcheck_through_the_multitier_model() -> None:
    torch.manual_seed(4)
    model = MultiTierMonDEQ((1, 4, 4), 2, channels=(1, 1), pad=2, m=0.5,
                            solver=PeacemanRachford(tol=1e-12, max_iter=3000)).double()
    assert gradcheck_module(model, torch.randn(2, 1, 4, 4, dtype=torch.float64))


@pytest.mark.parametrize("solver,channels,size,scale", [
    (PeacemanRachford(tol=1e-12, max_iter=3000), (1, 2, 1), (8, 8), 1.0),
    (ForwardBackward(tol=1e-11, max_iter=20_000), (1, 1), (4, 4), 0.1),  # ‖I − W‖ nearer m: 7× fewer iterations
], ids=["pr", "fb"])
def test_gradcheck_through_the_multitier_operator(solver, channels, size, scale) -> None:
    """Gradients in the input term and every operator parameter (1 × 1 kernels keep it cheap)."""
    net = _Equilibrium(_operator(channels, size, 1, seed=5, scale=scale), solver)
    assert gradcheck_module(net, torch.randn(1, net.op.shape[0], dtype=torch.float64))


class _Equilibrium(torch.nn.Module):
    def __init__(self, op: MultiTierMonotone, solver) -> None:
        super().__init__()
        self.op, self.solver = op, solver

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return mondeq.equilibrium(self.op, ReLU(), y, self.solver)


def test_paper_sizes_and_bad_geometry() -> None:
    sizes = {((1, 28, 28), "multitier"): 81_394, ((3, 32, 32), "multitier"): 170_194,
             ((3, 32, 32), "multitier-large"): 1_014_546}
    for (shape, name), count in sizes.items():
        assert sum(p.numel() for p in mondeq.build_model(name, shape, 10).parameters()) == count
    with pytest.raises(mondeq.InputError, match="divisible"):
        MultiTierMonotone((2, 2, 2), (10, 10))
    with pytest.raises(mondeq.InputError, match="tiers"):
        MultiTierMonotone((2,), (8, 8))
    with pytest.raises(mondeq.InputError, match="odd kernel"):
        MultiTierMonotone((2, 2), (8, 8), kernel_size=4)
    for channels, k in (((2, 2), 5), ((2, 2, 2), 3)):  # the last tier is 4 × 4, then 2 × 2
        with pytest.raises(mondeq.InputError, match="does not fit the last tier"):
            MultiTierMonotone(channels, (8, 8), kernel_size=k)
    assert MultiTierMonotone((2, 2), (8, 8), kernel_size=3).kernel_size == 3
