"""OptEq (SPEC 4.5): the certified bound on ‖V‖₂, the objective the equilibrium minimises (against an independent
optimiser), convex priors and their composition rules, the anchored iteration's selection among fixed points,
the deep block structure, gradients, and the guarantee checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_vjp_matches_autograd, dense_equilibrium, gradcheck_module
from scipy.optimize import minimize

from mondeq import InputError
from mondeq.activations import Activation, Identity, LeakyReLU, ReLU
from mondeq.cli import main
from mondeq.errors import UnprovenSolverError, UnsafeStepError
from mondeq.implicit import solve
from mondeq.models import OptEqConv, OptEqFC, build_model
from mondeq.operators import DenseMonotone
from mondeq.operators.dense import DenseFrozenOperator
from mondeq.operators.guarantees import Nonexpansive, Symmetric
from mondeq.operators.nemon import DenseNemon
from mondeq.operators.opteq import ConvOptEq, DenseOptEq, objective
from mondeq.presets import preset
from mondeq.priors import L1, Box, NonNegative, WithPrior, get_prior
from mondeq.solvers import (
    Anderson,
    DouglasRachford,
    ForwardBackward,
    Halpern,
    PeacemanRachford,
    default_solver,
)

F64 = torch.float64
SCALES = [1e-3, 1.0, 1e3]


def _scaled(op, scale: float, seed: int):
    torch.manual_seed(seed)
    with torch.no_grad():
        for t in op.tensors():
            t.normal_().mul_(scale)
    return op


def _materialise(f, shape: tuple[int, ...], dtype=F64) -> torch.Tensor:
    """The matrix (float64) of a frozen operator's ``W`` on flattened samples of ``shape``, column by column."""
    n = math.prod(shape)
    return f.W(torch.eye(n, dtype=dtype).view(n, *shape)).reshape(n, n).double().T


def _conv_matrix(op: ConvOptEq, kernel: torch.Tensor) -> torch.Tensor:
    """The dense matrix of the circular convolution with ``kernel`` on ``op``'s maps (float64)."""
    from mondeq.operators.spectral import circular_conv

    c, (h, w) = op.channels, op.size
    n = c * h * w
    return circular_conv(torch.eye(n, dtype=F64).view(n, c, h, w), kernel.double()).view(n, n).T


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("scale", SCALES)
def test_norm_bound_never_below_the_exact_norm_dense(scale: float, dtype: torch.dtype) -> None:
    for seed, blocks in enumerate((12, (4, 5, 3))):
        op = _scaled(DenseOptEq(blocks, 0.9, dtype=dtype), scale, seed)
        f = op.frozen()
        v_hat = op.v_hat().detach().double()
        exact = float(torch.linalg.matrix_norm(v_hat, ord=2))
        w = op.witness(op.tensors())
        assert w.value >= exact and w.value <= exact * (1 + 1e-12)  # an upper bound, and exact
        v = w.scale * v_hat  # the V the stored W is made of
        assert float(torch.linalg.matrix_norm(v, ord=2)) <= 0.9
        eig = torch.linalg.eigvalsh(f.weight.double())
        assert torch.equal(f.weight, f.weight.T)  # exactly symmetric
        assert float(eig[-1]) <= 1 - f.m and float(eig[0]) >= 1 - f.lipschitz
        # tight: the bound is ‖V‖₂² up to the rounding margins
        norm2 = (0.9 * min(exact, 1.0)) ** 2
        assert 1 - f.m <= norm2 * (1 + 1e-4) + 1e-6 and 1 - f.m >= norm2 * (1 - 1e-4)
        assert float(eig[-1]) >= norm2 * (1 - 1e-4)


@pytest.mark.parametrize("scale", SCALES)
def test_norm_bound_never_below_the_exact_norm_conv(scale: float) -> None:
    for seed, (channels, dtype) in enumerate(((2, F64), ((2, 1), F64), (2, torch.float32))):
        op = _scaled(ConvOptEq(channels, (5, 4), 3, 0.8, dtype=dtype), scale, seed)
        f = op.frozen()
        exact = float(torch.linalg.matrix_norm(_conv_matrix(op, op.v_hat().detach()), ord=2))
        w = op.witness(op.tensors())
        assert w.value >= exact and w.value <= exact * (1 + 1e-9)
        v = _conv_matrix(op, w.scale * op.v_hat().detach().double())
        assert float(torch.linalg.matrix_norm(v, ord=2)) <= 0.8
        wm = _materialise(f, op.shape, dtype)
        torch.testing.assert_close(wm, wm.T, atol=1e-6 if dtype == torch.float32 else 1e-13, rtol=0)
        torch.testing.assert_close(wm, v.T @ v, atol=2e-6 if dtype == torch.float32 else 1e-13, rtol=0)
        eig = torch.linalg.eigvalsh(0.5 * (wm + wm.T))
        tol = 1e-5 if dtype == torch.float32 else 1e-12  # the FFT's rounding, outside the guarantee
        assert float(eig[-1]) <= 1 - f.m + tol and float(eig[0]) >= 1 - f.lipschitz - tol
        assert float(eig[-1]) >= (0.8 * min(exact, 1.0)) ** 2 * (1 - 1e-4) - tol


@pytest.mark.parametrize("scale", [1.0, 0.05], ids=["normalised", "below-one"])
def test_differentiable_path_applies_the_stored_operator(scale: float) -> None:
    """Whether ``‖V̂‖₂`` is above 1 (``V̂`` rescaled) or below (left as it is), the differentiable ``W`` is the
    stored one."""
    for dtype, tol in ((torch.float32, 1e-5), (F64, 1e-12)):
        for op in (_scaled(DenseOptEq((5, 4), 0.9, dtype=dtype), scale, 1),
                   _scaled(ConvOptEq((2, 3), (6, 5), 3, 0.9, dtype=dtype), scale, 2)):
            value = op.witness(op.tensors()).value
            assert value > 1.5 if scale == 1.0 else value < 1.0
            z = torch.randn(3, *op.shape, dtype=dtype)
            torch.testing.assert_close(op(z), op.frozen().W(z), atol=tol, rtol=tol)
            torch.testing.assert_close(op.frozen().WT(z), op.frozen().W(z), atol=tol, rtol=tol)


def test_deep_operator_is_block_tridiagonal_and_input_reaches_the_first_block() -> None:
    op = _scaled(DenseOptEq((3, 4, 2, 3), 0.9, dtype=F64), 1.0, 3)
    w = op.frozen().weight
    ends = [0, 3, 7, 9, 12]
    for i in range(4):
        for j in range(4):
            block = w[ends[i] : ends[i + 1], ends[j] : ends[j + 1]]
            assert (block.abs().max() == 0) == (abs(i - j) > 1)
    conv = _scaled(ConvOptEq((2, 2, 1), (4, 4), 3, 0.9, dtype=F64), 1.0, 4)
    wm = _materialise(conv.frozen(), conv.shape).view(5, 16, 5, 16)
    assert wm[0:2, :, 4:5].abs().max() < 1e-13 and wm[2:4, :, 4:5].abs().max() > 1e-3
    model = OptEqFC((6,), 3, hidden=(4, 3, 2)).double()
    y = model.equilibrium_input(torch.randn(5, 6, dtype=F64))
    assert y.shape == (5, 9) and torch.equal(y[:, 4:], torch.zeros(5, 5, dtype=F64))
    assert sum(p.numel() for p in build_model("opteq-deep-fc", (1, 28, 28), 10).parameters()) == 83_170


def _plain_iterates(op, act, y, steps: int):
    it = ForwardBackward(alpha=1.0).iteration(op, act, y)
    z, out = it.x0, []
    for _ in range(steps):
        out.append(z)
        z = it.step(z, False)[0]
    return out


@pytest.mark.parametrize("act", [ReLU(), LeakyReLU(0.2)])
def test_objective_decreases_along_the_plain_iteration(act: Activation) -> None:
    for op, y in ((_scaled(DenseOptEq(15, 0.97, dtype=F64), 1.0, 5), torch.randn(4, 15, dtype=F64)),
                  (_scaled(ConvOptEq(2, (5, 5), 3, 0.97, dtype=F64), 1.0, 6), torch.randn(4, 2, 5, 5, dtype=F64))):
        f = op.frozen()
        g = torch.stack([objective(f, act, y, z) for z in _plain_iterates(f, act, y, 60)])
        assert torch.isfinite(g).all()
        drops = g[1:] - g[:-1]
        assert (drops <= 1e-12 * g.abs().max()).all()
        assert (drops[:5] < -1e-6).all()  # it moves: a constant G would pass vacuously


def _lbfgs(fun, grad, n: int, bounds=None) -> np.ndarray:
    res = minimize(fun, np.zeros(n), jac=grad, method="L-BFGS-B", bounds=bounds,
                   options={"ftol": 1e-15, "gtol": 1e-13, "maxiter": 20000, "maxcor": 30})
    return res.x


def _leaky(fun, grad, c: float):
    """``G`` and its gradient with the leaky ReLU's ``f(u) = c·min(u, 0)²/2`` added."""
    return (lambda u: fun(u) + 0.5 * c * np.square(np.minimum(u, 0)).sum()), (lambda u: grad(u) + c * np.minimum(u, 0))


def _with_l1(fun, grad, lam: float, split: bool):
    """``G + λ‖z‖₁`` and its gradient: on ``z ≥ 0`` (``λΣz``), or in ``z = p − q`` with ``p, q ≥ 0`` (``split``)."""
    if not split:
        return (lambda u: fun(u) + lam * u.sum()), (lambda u: grad(u) + lam)

    def fun2(pq):
        half = len(pq) // 2
        return fun(pq[:half] - pq[half:]) + lam * pq.sum()

    def grad2(pq):
        half = len(pq) // 2
        g = grad(pq[:half] - pq[half:])
        return np.concatenate([g + lam, -g + lam])

    return fun2, grad2


def _quadratic(w: np.ndarray, y: np.ndarray):
    a = np.eye(len(y)) - w
    return (lambda z: 0.5 * z @ a @ z - y @ z), (lambda z: a @ z - y)


def test_equilibrium_is_the_minimiser_found_by_lbfgs_and_satisfies_the_prox_condition() -> None:
    torch.manual_seed(7)
    for op, act in ((_scaled(DenseOptEq(20, 0.95, dtype=F64), 1.0, 7), ReLU()),
                    (_scaled(DenseOptEq((7, 6, 7), 0.95, dtype=F64), 1.0, 8), ReLU()),
                    (_scaled(ConvOptEq(2, (4, 4), 3, 0.95, dtype=F64), 1.0, 9), ReLU()),
                    (_scaled(DenseOptEq(20, 0.95, dtype=F64), 1.0, 10), LeakyReLU(0.25))):
        f = op.frozen()
        n = math.prod(op.shape)
        w = _materialise(f, op.shape).numpy()
        y = torch.randn(1, *op.shape, dtype=F64)
        sol = solve(op, act, y, PeacemanRachford(tol=1e-13, max_iter=5000))
        z = act(sol.pre_activation).reshape(-1).numpy()
        fun, grad = _quadratic(w, y.reshape(-1).numpy())
        if isinstance(act, LeakyReLU):
            ref = _lbfgs(*_leaky(fun, grad, 1 / act.negative_slope - 1), n)
        else:
            ref = _lbfgs(fun, grad, n, bounds=[(0, None)] * n)
            g = grad(z)  # KKT of min over z ≥ 0: g = 0 where z > 0, g ≥ 0 where z = 0
            active = z > 0
            assert np.abs(g[active]).max() < 1e-9 and g[~active].min() > -1e-9 and active.any() and (~active).any()
        assert np.abs(z - ref).max() < 1e-6
        # and G there is not above G at the independent solution
        gz = float(objective(f, act, y, torch.as_tensor(z).view(1, *op.shape)))
        assert gz <= float(objective(f, act, y, torch.as_tensor(ref).view(1, *op.shape))) + 1e-12


def test_objective_needs_a_symmetric_operator() -> None:
    f = DenseMonotone(4, dtype=F64).frozen()
    with pytest.raises(InputError, match="symmetric"):
        objective(f, ReLU(), torch.zeros(1, 4, dtype=F64), torch.zeros(1, 4, dtype=F64))


def test_l1_prior_equilibrium_solves_the_modified_problem() -> None:
    lam = 0.3
    for act in (ReLU(), Identity()):
        op = _scaled(DenseOptEq(16, 0.9, dtype=F64), 1.0, 11)
        f = op.frozen()
        w = f.weight.numpy()
        torch.manual_seed(12)
        y = torch.randn(1, 16, dtype=F64)
        prior = WithPrior(act, L1(lam))
        sol = solve(op, prior, y, PeacemanRachford(tol=1e-13, max_iter=5000))
        z = prior(sol.pre_activation)[0].numpy()
        fun, grad = _quadratic(w, y[0].numpy())
        if isinstance(act, ReLU):  # on z ≥ 0, λ‖z‖₁ = λΣz
            ref = _lbfgs(*_with_l1(fun, grad, lam, False), 16, [(0, None)] * 16)
        else:  # z = p − q with p, q ≥ 0: a smooth problem with bounds
            pq = _lbfgs(*_with_l1(fun, grad, lam, True), 32, [(0, None)] * 32)
            ref = pq[:16] - pq[16:]
        assert np.abs(z - ref).max() < 1e-6
        plain = solve(op, act, y, PeacemanRachford(tol=1e-13, max_iter=5000)).z[0].numpy()
        assert np.abs(plain - ref).max() > 1e-2  # the prior changed the problem
        assert (np.abs(z) < 1e-12).sum() > (np.abs(plain) < 1e-12).sum()  # towards sparsity


_GRID = torch.linspace(-8.0, 8.0, 80001, dtype=F64)
_INF = torch.tensor(math.inf, dtype=F64)
# f and R written out here, independently of the library's value(): ReLU, leaky ReLU (a = 0.3), identity; priors
_F = {"ReLU": lambda u: torch.where(u >= 0, 0.0, _INF),
      "LeakyReLU": lambda u: torch.where(u < 0, (1 / 0.3 - 1) * u.square() / 2, 0.0),
      "Identity": lambda u: torch.zeros_like(u)}
_R = {"L1(0.7)": lambda u: 0.7 * u.abs(),
      "Box(-0.5, 1.2)": lambda u: torch.where((u >= -0.5) & (u <= 1.2), 0.0, _INF),
      "NonNegative()": lambda u: torch.where(u >= 0, 0.0, _INF),
      "Box(0.4, 2)": lambda u: torch.where((u >= 0.4) & (u <= 2.0), 0.0, _INF)}


def _brute_prox(value, v: torch.Tensor, alpha: float) -> torch.Tensor:
    """``argmin_u ½(u − v)² + α·value(u)`` on a fine grid (independent of any prox formula)."""
    h = 0.5 * (_GRID[None, :] - v[:, None]).square() + alpha * value(_GRID)[None, :]
    return _GRID[h.argmin(dim=1)]


@pytest.mark.parametrize("alpha", [0.3, 1.0, 4.0])
def test_composed_prox_is_the_prox_of_the_sum(alpha: float) -> None:
    v = torch.linspace(-4.0, 4.0, 37, dtype=F64) + 0.013
    step = float(_GRID[1] - _GRID[0])
    for act in (ReLU(), LeakyReLU(0.3), Identity()):
        for prior in (L1(0.7), Box(-0.5, 1.2), NonNegative(), Box(0.4, 2.0)):
            composed = WithPrior(act, prior)
            f, r = _F[type(act).__name__], _R[repr(prior)]
            ref = _brute_prox(lambda u, f=f, r=r: f(u) + r(u), v, alpha)
            assert (composed.prox(v, alpha) - ref).abs().max() <= step, (act, prior)
            torch.testing.assert_close(composed.value(_GRID), f(_GRID) + r(_GRID))
    # the order matters: for the leaky ReLU and ℓ1, soft ∘ prox_f is not the prox of the sum
    act, prior = LeakyReLU(0.3), L1(0.7)
    wrong = prior.prox(act.prox(v, alpha), alpha)
    ref = _brute_prox(lambda u: _F["LeakyReLU"](u) + _R["L1(0.7)"](u), v, alpha)
    assert (wrong - ref).abs().max() > 0.05


def test_composed_derivative() -> None:
    torch.manual_seed(13)
    v = torch.randn(200, dtype=F64) * 2
    for act in (ReLU(), LeakyReLU(0.3), Identity()):
        for prior in (L1(0.7), Box(-0.5, 1.2)):
            c = WithPrior(act, prior)
            h = 1e-6
            fd = (c(v + h) - c(v - h)) / (2 * h)
            kink = (fd - c.derivative(v)).abs() > 1e-6  # at most the points within h of a kink
            assert kink.sum() <= 2 and ((c.derivative(v) >= 0) & (c.derivative(v) <= 1)).all()


def test_priors_outside_the_proved_rules_are_refused() -> None:
    class Shifted(Activation):  # the prox of (u − 1)²/2: not minimised at 0
        def prox(self, v, alpha):
            return (v + alpha) / (1 + alpha)

        def derivative(self, v):
            return torch.full_like(v, 0.5)

        def value(self, u):
            return 0.5 * (u - 1).square()

    with pytest.raises(InputError, match="minimised at 0"):
        WithPrior(Shifted(), L1(0.1))
    with pytest.raises(InputError, match="does not meet"):
        WithPrior(ReLU(), Box(-2.0, -1.0))
    with pytest.raises(InputError, match="not known"):
        WithPrior(Shifted(), Box(0.0, 1.0))
    with pytest.raises(InputError, match="unknown prior"):
        get_prior("l2")
    with pytest.raises(InputError):
        L1(-1.0)


def _halpern(op, act, y, anchor, start, tol=1e-4):
    return Halpern(anchor=anchor, tol=tol).solve(op, act, y, start)


def test_anchored_iteration_selects_the_fixed_point_nearest_the_anchor_linear() -> None:
    """Identity activation, ``W = P`` the projection onto a 3-dimensional subspace ``S`` of ℝ⁸ and ``y ⊥ S``: the
    fixed points are ``y + S``; the one nearest ``a`` is computed by least squares. Here the iterates are
    explicit: ``z_k − z̄ = ((z₀ − a)_S + (a − y)_⊥)/(k + 1)`` and the residual ``z_k − T(z_k) = (a − y)_⊥/(k + 1)``,
    so the distance is at most the residual times ``(‖(z₀ − a)_S‖ + ‖(a − y)_⊥‖)/‖(a − y)_⊥‖``."""
    torch.manual_seed(14)
    q, _ = torch.linalg.qr(torch.randn(8, 3, dtype=F64))
    p = q @ q.T
    op = DenseFrozenOperator(p, guarantee=Nonexpansive(symmetric=True))
    y = (torch.eye(8, dtype=F64) - p) @ torch.randn(8, dtype=F64)
    a = torch.randn(8, dtype=F64) * 3
    i_p = (torch.eye(8, dtype=F64) - p).numpy()
    nearest = a.numpy() - np.linalg.lstsq(i_p, i_p @ a.numpy() - y.numpy(), rcond=None)[0]
    points = []
    for seed in range(3):
        torch.manual_seed(100 + seed)
        start = torch.randn(1, 8, dtype=F64) * 5
        sol = _halpern(op, Identity(), y[None], a[None], start)
        assert sol.stats.converged
        points.append(sol.z[0].numpy())
        d_s, d_perp = float((p @ (start[0] - a)).norm()), float(((torch.eye(8, dtype=F64) - p) @ a - y).norm())
        bound = float(sol.stats.residual_norm[0]) * (d_s + d_perp) / d_perp
        assert np.linalg.norm(points[-1] - nearest) <= bound * (1 + 1e-6) and bound < 5e-3
    other = _halpern(op, Identity(), y[None], (a + 2 * q[:, 0])[None], None).z[0].numpy()
    assert np.linalg.norm(other - nearest) > 1.9  # another anchor selects another: ‖P(2q)‖ = 2 away


def test_anchored_iteration_selects_the_fixed_point_nearest_the_anchor_relu() -> None:
    """ReLU, ``W = ½𝟙𝟙ᵀ`` on the first two coordinates (``y = 0`` there) beside a contractive block: the fixed
    points are ``(t, t, z₂*)``, ``t ≥ 0``, and the nearest to ``a`` has ``t = max((a₁ + a₂)/2, 0)``."""
    torch.manual_seed(15)
    b = torch.randn(6, 6, dtype=F64)
    w2 = b.T @ b
    w2 = 0.8 * w2 / torch.linalg.matrix_norm(w2, ord=2)
    w = torch.zeros(8, 8, dtype=F64)
    w[:2, :2], w[2:, 2:] = 0.5, w2
    op = DenseFrozenOperator(w, guarantee=Nonexpansive(symmetric=True))
    y = torch.cat([torch.zeros(2, dtype=F64), torch.randn(6, dtype=F64)])[None]
    z2 = dense_equilibrium(w2, y[:, 2:])[0]
    for a12 in ((0.7, 2.1), (-3.0, 1.0)):
        a = torch.cat([torch.tensor(a12, dtype=F64), torch.randn(6, dtype=F64)])[None]
        t = max(sum(a12) / 2, 0.0)
        for start in (None, torch.rand(1, 8, dtype=F64) * 4):
            # the anchor's O(1/k) bias after the ~10⁴ iterations this tolerance takes is ~‖z₀ − a‖/10⁴; a wrong
            # selection (the start's or an unclamped t) would be O(1) away
            z = _halpern(op, ReLU(), y, a, start, tol=3e-4).z[0]
            assert abs(float(z[0]) - t) < 5e-3 and abs(float(z[1]) - t) < 5e-3
            assert (z[2:] - z2).abs().max() < 5e-3


def test_guarantee_checks_for_nonexpansive_and_symmetric_operators() -> None:
    f = DenseFrozenOperator(torch.eye(3, dtype=F64), guarantee=Nonexpansive())
    y = torch.zeros(1, 3, dtype=F64)
    for s in (ForwardBackward(), PeacemanRachford(), DouglasRachford(), Anderson(Halpern())):
        with pytest.raises(UnprovenSolverError):
            s.solve(f, ReLU(), y)
    for g in (DenseMonotone(3, dtype=F64).frozen(), DenseNemon(3, dtype=F64).frozen()):
        with pytest.raises(UnprovenSolverError, match="halpern"):
            Halpern().solve(g, ReLU(), y)
    op = _scaled(DenseOptEq(10, 0.9, dtype=F64), 1.0, 16)
    assert isinstance(op.frozen().guarantee, Symmetric) and default_solver(op.guarantee_type) == "pr"
    yy = torch.randn(4, 10, dtype=F64)
    ref = solve(op, ReLU(), yy, PeacemanRachford(tol=1e-12)).z
    assert (Halpern().solve(op.frozen(), ReLU(), yy).z - ref).abs().max() < 1e-2 * ref.abs().max()
    plain = ForwardBackward(alpha=1.0, tol=1e-11).solve(op.frozen(), ReLU(), yy)  # the unit step is proved: 1 < 2/L
    assert plain.stats.alpha == 1.0 and (plain.z - ref).abs().max() < 1e-8
    with pytest.raises(InputError, match="step"):
        Halpern(alpha=0.5)


def test_gamma_one_is_for_inference_only() -> None:
    model = OptEqFC((5,), 3, hidden=6, gamma=1.0).double()
    op = model.mon.operator
    assert isinstance(op.frozen().guarantee, Nonexpansive) and op.frozen().guarantee.symmetric
    assert default_solver(op.guarantee_type) == "halpern" and isinstance(model.mon.solver, Halpern)
    x = torch.randn(2, 5, dtype=F64)
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    with pytest.raises(InputError, match="inference only"):
        model(x).sum().backward()
    with pytest.raises(InputError):
        DenseOptEq(4, 1.5)


def test_gradcheck_fc_conv_and_deep() -> None:
    torch.manual_seed(17)
    cases = ((OptEqFC((5,), 3, hidden=6), torch.randn(3, 5)),
             (OptEqFC((5,), 3, hidden=(3, 4, 2), prior="l1", prior_weight=0.05), torch.randn(3, 5)),
             (OptEqConv((1, 4, 4), 3, channels=2, pool=2), torch.randn(2, 1, 4, 4)),
             (OptEqConv((1, 4, 4), 3, channels=(2, 1), pool=2), torch.randn(2, 1, 4, 4)))
    for model, x in cases:
        model = model.double()
        with torch.no_grad():  # ‖V̂‖₂ > 1: the normalisation, and its gradient, is active
            for t in model.mon.operator.tensors():
                t.mul_(3.0)
        op = model.mon.operator
        assert op.witness(op.tensors()).value > 1.5
        model.mon.solver = PeacemanRachford(tol=1e-13, max_iter=5000)
        assert gradcheck_module(model, x.double())
        assert model.mon.last_solve.backward is not None and model.mon.last_solve.backward.converged


def test_conv_vjp_in_frequency_matches_autograd() -> None:
    op = _scaled(ConvOptEq((2, 3), (5, 6), 3, 0.9, dtype=F64), 1.0, 18)
    z, u = torch.randn(3, 5, 5, 6, dtype=F64), torch.randn(3, 5, 5, 6, dtype=F64)
    assert_vjp_matches_autograd(op, z, u, atol=1e-10, rtol=1e-10)


def test_models_objective_and_equilibrium() -> None:
    torch.manual_seed(19)
    for model, x in ((OptEqFC((6,), 3, hidden=5), torch.randn(4, 6)),
                     (OptEqConv((1, 5, 5), 3, channels=2, pool=2), torch.randn(4, 1, 5, 5))):
        model = model.double()
        x = x.double()
        z = model.equilibrium(x)
        g = model.objective(x, z)
        for _ in range(5):  # feasible perturbations (ReLU's and the zeroed border's domain kept)
            dz = (z + 0.05 * torch.randn_like(z)).clamp_min(0) * (z != 0 if z.dim() > 2 else 1)
            assert (model.objective(x, dz) >= g - 1e-9).all()
        assert torch.isinf(model.objective(x, z - 1.0)).all()


def test_cli_presets_and_priors(tmp_path) -> None:
    cfg = preset("mnist-opteq-fc")
    assert cfg["model"] == "opteq-fc" and "m" not in cfg and cfg["solver"] == "pr"
    assert main(["train", "--model", "opteq-fc", "--hidden", "8", "--prior", "l1", "--prior-weight", "0.01",
                 "--epochs", "1", "--train-subset", "64", "--test-subset", "32", "--no-progress"]) == 0
    assert main(["train", "--model", "opteq-fc", "--prior-weight", "0.1", "--epochs", "1", "--no-progress"]) == 2
    assert main(["train", "--model", "fc", "--prior", "l1", "--epochs", "1", "--no-progress"]) == 2
    assert main(["train", "--model", "opteq-fc", "--gamma", "1", "--epochs", "1", "--no-progress"]) == 2


@pytest.mark.parametrize("gamma", [0.0, -0.5, 1.0 + 1e-9, math.nan])
def test_gamma_outside_its_interval_is_refused(gamma: float) -> None:
    """``γ`` bounds ``‖V‖₂`` and must lie in ``(0, 1]``: both ends of the interval are checked."""
    with pytest.raises(InputError, match=r"in \(0, 1\]"):
        DenseOptEq(4, gamma=gamma)
    assert DenseOptEq(4, gamma=1.0).gamma == 1.0 and DenseOptEq(4, gamma=1e-6).gamma == 1e-6


def test_conv_kernels_must_be_odd_and_fit() -> None:
    for k in (2, 4, 0, 7):  # even (no centre tap), empty, larger than the 6 × 6 image
        with pytest.raises(InputError, match="kernel"):
            ConvOptEq(2, (6, 6), k)
    assert ConvOptEq(2, (6, 6), 5).kernel_size == 5


def test_forward_backward_on_a_symmetric_operator_takes_steps_below_two_over_L() -> None:
    """For a symmetric ``W`` the proved bound is ``α < 2/L`` (not ``2m/L²``), strictly: with ``V = I``,
    ``I − W ≈ 0.19·I`` and ``L`` is OptEq's bound ``1 + rounding``, so ``0.95·2/L`` is accepted (5× the
    general ``2m/L²``) and converges, while ``2/L`` itself and beyond are refused."""
    op = DenseOptEq(6, 0.9, dtype=F64)
    with torch.no_grad():
        for t in op.tensors():
            t.copy_(torch.eye(6, dtype=F64))
    f = op.frozen()
    assert isinstance(f.guarantee, Symmetric) and 0.15 < f.m < 0.25 and 1.0 <= f.lipschitz < 1.0 + 1e-12
    bound = 2.0 / f.lipschitz
    y = torch.randn(3, 6, dtype=F64)
    ref = solve(op, ReLU(), y, PeacemanRachford(tol=1e-12)).z
    sol = ForwardBackward(alpha=0.95 * bound, tol=1e-10, max_iter=5000).solve(f, ReLU(), y)
    assert sol.stats.converged and (sol.z - ref).abs().max() < 1e-8
    for alpha in (bound, 1.01 * bound):
        with pytest.raises(UnsafeStepError, match="not provably convergent"):
            ForwardBackward(alpha=alpha).solve(f, ReLU(), y)
