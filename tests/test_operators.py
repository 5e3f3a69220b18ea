"""The dense monotone operator (SPEC 1.2): strong monotonicity for every parameter value, products,
resolvents and constants against dense linear algebra, and the per-parameter-value cache."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mondeq import DenseMonotone, InputError

scales = st.sampled_from([1e-3, 1.0, 1e3])


def _operator(n: int, m: float, seed: int, scale_a: float, scale_b: float, normalized: bool = False):
    torch.manual_seed(seed)
    op = DenseMonotone(n, m, normalized=normalized, dtype=torch.float64)
    with torch.no_grad():
        op.A.mul_(scale_a)
        op.B.mul_(scale_b)
        if normalized:  # g's raw parameter may take any value, negative included
            op.g.fill_(-30.0 if seed % 2 else scale_a)
            op.h.fill_(scale_b)
    return op


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    m=st.sampled_from([1e-2, 0.5, 1.0]),
    seed=st.integers(0, 10_000),
    scale_a=scales,
    scale_b=scales,
    normalized=st.booleans(),
)
def test_symmetric_part_is_at_least_m(n, m, seed, scale_a, scale_b, normalized) -> None:
    w = _operator(n, m, seed, scale_a, scale_b, normalized).weight().detach()
    sym = torch.eye(n, dtype=w.dtype) - (w + w.T) / 2
    lam = torch.linalg.eigvalsh(sym).min()
    assert lam >= m - 1e-12 * (1 + torch.linalg.matrix_norm(w, 2))


@pytest.mark.parametrize("alpha", [0.1, 1.0, 7.0])
def test_products_resolvent_and_norm_match_dense(alpha: float) -> None:
    op = _operator(9, 0.7, 0, 2.0, 3.0)
    w = op.weight().detach()
    frozen = op.frozen()
    z = torch.randn(4, 9, dtype=torch.float64)
    c = torch.randn(4, 9, dtype=torch.float64)
    torch.testing.assert_close(frozen.W(z), z @ w.T)
    torch.testing.assert_close(frozen.WT(z, add=c), c + z @ w)
    system = (1 + alpha) * torch.eye(9, dtype=w.dtype) - alpha * w
    r = frozen.resolvent(alpha)
    torch.testing.assert_close(r.apply(z), torch.linalg.solve(system, z.T).T)
    torch.testing.assert_close(r.apply_T(z, add=c), c + torch.linalg.solve(system.T, z.T).T)
    t = frozen.transpose()
    torch.testing.assert_close(t.W(z), frozen.WT(z))
    torch.testing.assert_close(t.resolvent(alpha).apply(z), r.apply_T(z))
    assert t.transpose() is frozen
    exact = torch.linalg.matrix_norm(torch.eye(9, dtype=w.dtype) - w, 2)
    assert exact <= frozen.lipschitz <= exact * (1 + 1e-9)
    assert t.lipschitz == frozen.lipschitz


def test_resolvent_singular_values_are_bounded() -> None:
    op = _operator(12, 0.3, 1, 1.0, 1.0)
    frozen = op.frozen()
    alpha = 0.8
    inv = frozen.resolvent(alpha).matrix
    s = torch.linalg.svdvals(inv)
    assert s.max() <= 1 / (1 + alpha * 0.3) + 1e-12
    assert s.min() >= 1 / (1 + alpha * frozen.lipschitz) - 1e-12


def test_frozen_operator_is_cached_until_values_change() -> None:
    op = DenseMonotone(6)
    f1 = op.frozen()
    assert op.frozen() is f1
    assert f1.resolvent(0.5) is f1.resolvent(0.5)
    # an optimizer step changes the values: rebuilt
    opt = torch.optim.SGD(op.parameters(), lr=0.1)
    (op(torch.randn(3, 6)) ** 2).sum().backward()
    opt.step()
    f2 = op.frozen()
    assert f2 is not f1
    torch.testing.assert_close(f2.weight, op.weight().detach())
    # a write that bypasses version counters is seen too
    op.A.data[0, 0] += 1.0
    f3 = op.frozen()
    assert f3 is not f2
    torch.testing.assert_close(f3.weight, op.weight().detach())
    # a zero step moves the version counters, not the values: rebuilt without the comparison, the same operator
    opt.zero_grad()
    for p in op.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    f4 = op.frozen()
    assert f4 is not f3
    torch.testing.assert_close(f4.weight, f3.weight, rtol=0, atol=0)
    assert op.frozen() is f4


def test_bad_construction() -> None:
    with pytest.raises(InputError):
        DenseMonotone(5, m=0.0)
    with pytest.raises(InputError):
        DenseMonotone(0)
    with pytest.raises(InputError):
        DenseMonotone(3).frozen().resolvent(0.0)


def test_cache_sees_a_change_of_m() -> None:
    op = DenseMonotone(4)
    f1 = op.frozen()
    op.m = 0.25
    f2 = op.frozen()
    assert f2 is not f1 and f2.m == 0.25
    torch.testing.assert_close(f2.weight, op.weight().detach())


def test_float32_resolvent_is_the_rounded_float64_inverse() -> None:
    """The dense resolvent of a float32 operator is inverted in float64 and rounded once: every entry within
    half a float32 ulp (relative 2⁻²⁴) of the float64 inverse. A float32 inversion misses that by orders of
    magnitude on a matrix of this size and conditioning."""
    torch.manual_seed(3)
    op = DenseMonotone(87, m=0.2)
    with torch.no_grad():
        op.B.mul_(4.0)
    w = op.frozen().weight.double()
    eye = torch.eye(87, dtype=torch.float64)
    for alpha in (0.3, 1.0):
        ref = torch.linalg.inv((1 + alpha) * eye - alpha * w)
        got = op.frozen().resolvent(alpha).matrix.double()
        assert ((got - ref).abs() <= 2.0**-24 * ref.abs() + 1e-45).all()
        single = torch.linalg.inv(((1 + alpha) * eye - alpha * w).float()).double()
        assert ((single - ref).abs() > 2.0**-24 * ref.abs()).float().mean() > 0.5  # the check can fail
