"""Activations are proximal operators (SPEC 1.1): prox optimality, α-dependence, derivatives."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mondeq import Diagonal, InputError, LeakyReLU, ReLU, get_activation

floats = st.floats(-1e3, 1e3, allow_nan=False)
alphas = st.floats(1e-3, 1e3)


def _prox_objective(act, v: float, alpha: float, u: torch.Tensor) -> torch.Tensor:
    """``½(u − v)² + α f(u)`` for the f of each activation (+inf outside the domain)."""
    if isinstance(act, ReLU):
        f = torch.where(u >= 0, 0.0, float("inf"))
    else:
        a = act.negative_slope
        f = torch.where(u < 0, (1 / a - 1) * u**2 / 2, 0.0)
    return 0.5 * (u - v) ** 2 + alpha * f


@settings(max_examples=200, deadline=None)
@given(v=floats, alpha=alphas, slope=st.floats(0.01, 1.0))
def test_prox_minimises_its_objective(v: float, alpha: float, slope: float) -> None:
    for act in (ReLU(), LeakyReLU(slope)):
        p = act.prox(torch.tensor([v], dtype=torch.float64), alpha)
        grid = p + torch.linspace(-1, 1, 201, dtype=torch.float64) * (1e-3 + 1e-3 * abs(v))
        assert _prox_objective(act, v, alpha, p) <= _prox_objective(act, v, alpha, grid).min() + 1e-12


@settings(max_examples=100, deadline=None)
@given(v=st.lists(floats, min_size=2, max_size=2), slope=st.floats(0.01, 1.0))
def test_activation_is_monotone_and_1_lipschitz(v: list[float], slope: float) -> None:
    x = torch.tensor(v, dtype=torch.float64)
    for act in (ReLU(), LeakyReLU(slope)):
        s = act(x)
        assert (s[0] - s[1]) * (x[0] - x[1]) >= 0
        assert abs(s[0] - s[1]) <= abs(x[0] - x[1]) + 1e-12


def test_sigma_is_prox_with_unit_step_and_derivatives() -> None:
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    x = x[x.abs() > 1e-9]
    torch.testing.assert_close(ReLU()(x), torch.relu(x))
    torch.testing.assert_close(LeakyReLU(0.2)(x), torch.nn.functional.leaky_relu(x, 0.2))
    for act in (ReLU(), LeakyReLU(0.2)):
        fd = (act(x + 1e-7) - act(x - 1e-7)) / 2e-7
        torch.testing.assert_close(act.derivative(x), fd, atol=1e-6, rtol=0)


def test_leaky_prox_depends_on_alpha() -> None:
    act = LeakyReLU(0.5)
    v = torch.tensor([-2.0], dtype=torch.float64)
    # (1/a − 1) = 1, so prox^α(v) = v / (1 + α)
    torch.testing.assert_close(act.prox(v, 3.0), v / 4)


@settings(max_examples=100, deadline=None)
@given(v=floats, alpha=alphas, d=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)))
def test_diagonal_prox_is_optimal(v: float, alpha: float, d: float) -> None:
    act = Diagonal(torch.tensor([d], dtype=torch.float64))
    p = float(act.prox(torch.tensor([v], dtype=torch.float64), alpha))
    if d == 0.0:
        assert p == 0.0
    else:  # optimality: (p − v) + α(1/d − 1) p = 0
        assert abs((p - v) + alpha * (1 / d - 1) * p) <= 1e-9 * (1 + abs(v))
    assert float(act(torch.tensor([v], dtype=torch.float64))) == pytest.approx(d * v)


def test_registry() -> None:
    assert isinstance(get_activation("relu"), ReLU)
    assert get_activation("leaky_relu", negative_slope=0.3).negative_slope == 0.3
    with pytest.raises(InputError, match="unknown activation"):
        get_activation("tanhh")
    with pytest.raises(InputError):
        LeakyReLU(0.0)
