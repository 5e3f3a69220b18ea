"""Solvers against an independent dense solution (SPEC 2): every method, with and without Anderson, on
random and badly scaled parameters; step-size safety; statistics; failure reporting."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from conftest import dense_equilibrium, dense_input_gradient

import mondeq
from mondeq import (
    Anderson,
    ConvergenceError,
    ConvergenceWarning,
    DenseMonotone,
    DouglasRachford,
    ForwardBackward,
    InputError,
    LeakyReLU,
    PeacemanRachford,
    ReLU,
    UnsafeStepError,
)
from mondeq.activations import Identity
from mondeq.operators.dense import DenseFrozenOperator

BASES = {
    "fb": lambda **kw: ForwardBackward(**{"max_iter": 5000, **kw}),
    "pr": lambda **kw: PeacemanRachford(**kw),
    "dr": lambda **kw: DouglasRachford(**{"max_iter": 1000, **kw}),
}


def _problem(n: int = 24, batch: int = 10, seed: int = 0, scale_a: float = 1.0, scale_b: float = 1.0):
    torch.manual_seed(seed)
    op = DenseMonotone(n, m=0.5, dtype=torch.float64)
    with torch.no_grad():
        op.A.mul_(scale_a)
        op.B.mul_(scale_b)
    y = 2 * torch.randn(batch, n, dtype=torch.float64)
    return op, y


@pytest.mark.parametrize("name,anderson,slope", list(itertools.product(BASES, [False, True], [0.0, 0.2])))
def test_solvers_match_dense_solution(name: str, anderson: bool, slope: float) -> None:
    op, y = _problem(seed=3)
    act = ReLU() if slope == 0 else LeakyReLU(slope)
    solver = BASES[name](tol=1e-11)
    if anderson:
        solver = Anderson(solver)
    sol = mondeq.solve(op, act, y, solver)
    ref = dense_equilibrium(op.weight().detach(), y, slope, start=sol.z)
    assert sol.stats.converged
    assert sol.stats.max_residual <= 1e-11
    torch.testing.assert_close(sol.z, ref, atol=1e-8, rtol=0)
    v = sol.z @ op.weight().detach().T + y
    torch.testing.assert_close(sol.pre_activation, v, atol=1e-9, rtol=0)


@pytest.mark.parametrize("scale_a,scale_b", list(itertools.product([1e-3, 1.0, 1e3], repeat=2)))
def test_splitting_converges_on_badly_scaled_parameters(scale_a: float, scale_b: float) -> None:
    """PR and DR converge for every α; a step matched to the scale (α = 1/‖I − W‖₂) keeps it fast."""
    for seed in range(2):
        op, y = _problem(n=16, batch=6, seed=seed, scale_a=scale_a, scale_b=scale_b)
        w = op.weight().detach()
        sym = torch.eye(16, dtype=w.dtype) - (w + w.T) / 2
        assert torch.linalg.eigvalsh(sym).min() >= 0.5 - 1e-9 * torch.linalg.matrix_norm(w, 2)
        alpha = 1.0 / op.frozen().lipschitz
        solvers = [PeacemanRachford(alpha=alpha, tol=1e-7, max_iter=60_000),
                   Anderson(DouglasRachford(alpha=alpha, tol=1e-7, max_iter=60_000), memory=10)]
        if scale_b < 10:  # a skew part 10³ times larger takes these 30,000–80,000 iterations: too slow here
            solvers += [DouglasRachford(alpha=alpha, tol=1e-7, max_iter=60_000),
                        Anderson(PeacemanRachford(alpha=alpha, tol=1e-7, max_iter=60_000))]
        if max(scale_a, scale_b) < 10:  # forward–backward's rate √(1 − m²/L²) is hopeless for L/m ~ 10⁶
            solvers.append(ForwardBackward(tol=1e-7, max_iter=60_000))
        for solver in solvers:
            sol = mondeq.solve(op, ReLU(), y, solver)
            assert sol.stats.converged, (solver.name, scale_a, scale_b, sol.stats)
            ref = dense_equilibrium(w, y, start=sol.z)
            scale = ref.abs().max() + y.abs().max() * 1e-2
            assert (sol.z - ref).abs().max() <= 1e-5 * scale


def test_forward_backward_step_safety() -> None:
    op, y = _problem(seed=1)
    frozen = op.frozen()
    bound = 2 * frozen.m / frozen.lipschitz**2
    sol = mondeq.solve(op, ReLU(), y, ForwardBackward(tol=1e-9, max_iter=10_000))
    assert sol.stats.alpha == pytest.approx(bound / 2)
    assert sol.stats.converged
    ok = mondeq.solve(op, ReLU(), y, ForwardBackward(alpha=0.95 * bound, tol=1e-9, max_iter=10_000))
    torch.testing.assert_close(ok.z, sol.z, atol=1e-7, rtol=0)
    with pytest.raises(UnsafeStepError, match="not provably convergent"):
        mondeq.solve(op, ReLU(), y, ForwardBackward(alpha=1.01 * bound))


def test_forward_backward_contracts_at_the_guaranteed_rate() -> None:
    op, y = _problem(seed=2)
    f = op.frozen()
    alpha = f.m / f.lipschitz**2
    rate = (1 - 2 * alpha * f.m + alpha**2 * f.lipschitz**2) ** 0.5
    it = ForwardBackward().iteration(f, ReLU(), y)
    z_star = dense_equilibrium(f.weight, y)
    z = it.x0
    err = (z - z_star).norm(dim=1)
    for _ in range(30):
        z, _, _ = it.step(z, False)
        new = (z - z_star).norm(dim=1)
        assert (new <= rate * err + 1e-12).all()
        err = new


def test_statistics_are_honest() -> None:
    op, y = _problem(seed=4)
    sol = mondeq.solve(op, ReLU(), y, PeacemanRachford(tol=1e-8, check_every=1))
    s = sol.stats
    assert len(s.residual_trace) == s.iterations == len(s.checked_at)
    assert s.checked_at == tuple(range(1, s.iterations + 1))
    assert s.residual.shape == (y.shape[0],)
    assert float(s.residual.max()) == pytest.approx(s.max_residual)
    assert s.time_s > 0 and s.alpha == 1.0
    # the reported residual is the exact one at the returned point
    v = sol.z @ op.weight().detach().T + y
    exact = (sol.z - torch.relu(v)).norm(dim=1) / (sol.z.norm(dim=1) + 1e-2 * y.norm(dim=1))
    torch.testing.assert_close(s.residual, exact, atol=1e-15, rtol=1e-6)
    # the predicted check schedule stops as soon as fixed checks would, or nearly
    auto = mondeq.solve(op, ReLU(), y, PeacemanRachford(tol=1e-8))
    assert s.iterations <= auto.stats.iterations <= s.iterations + 2
    assert len(auto.stats.checked_at) < len(s.checked_at)


def test_per_sample_stopping() -> None:
    """The batch stops when its worst sample converges (not its best or its mean): with a check at every
    iteration it takes exactly as many iterations as its slowest sample alone, and its samples differ."""
    op, y = _problem(seed=5, batch=6)
    y[0] = y[0] - 3.0  # mostly inactive: an equilibrium of another kind
    solver = PeacemanRachford(tol=1e-10, check_every=1)
    alone = [mondeq.solve(op, ReLU(), y[i : i + 1], solver).stats.iterations for i in range(len(y))]
    sol = mondeq.solve(op, ReLU(), y, solver)
    assert min(alone) < max(alone)
    assert sol.stats.iterations == max(alone) and (sol.stats.residual <= 1e-10).all()


def test_an_iteration_that_overflows_raises() -> None:
    """A step far outside forward–backward's guarantee (forced past its check) overflows: the non-finite
    residual ends the solve with ConvergenceError, never a NaN result or a 'converged' flag."""

    class Reckless(ForwardBackward):
        def safe_alpha(self, op):
            return 1e3

    op, y = _problem(seed=2)
    with pytest.raises(ConvergenceError, match="overflowed"):
        mondeq.solve(op, _Identity(), y, Reckless(max_iter=5000))


@pytest.mark.parametrize("name", ["pr", "dr"])
@pytest.mark.parametrize("factor", [0.05, 1.0, 20.0])
def test_splitting_converges_for_every_alpha(name: str, factor: float) -> None:
    """Peaceman–Rachford and Douglas–Rachford converge for every α > 0: steps far below and above 1/L."""
    op, y = _problem(n=16, batch=6, seed=13)
    alpha = factor / op.frozen().lipschitz
    sol = mondeq.solve(op, ReLU(), y, BASES[name](alpha=alpha, tol=1e-9, max_iter=20_000))
    assert sol.stats.converged
    ref = dense_equilibrium(op.weight().detach(), y, start=sol.z)
    torch.testing.assert_close(sol.z, ref, atol=1e-7, rtol=0)


def test_non_convergence_is_reported() -> None:
    op, y = _problem(seed=6)
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        sol = mondeq.solve(op, ReLU(), y, PeacemanRachford(tol=1e-12, max_iter=3))
    assert not sol.stats.converged and sol.stats.iterations == 3
    with pytest.raises(ConvergenceError, match="max_iter=3"):
        mondeq.solve(op, ReLU(), y, PeacemanRachford(tol=1e-12, max_iter=3, strict=True))
    with pytest.warns(ConvergenceWarning):
        mondeq.solve(op, ReLU(), y, Anderson(DouglasRachford(tol=1e-12, max_iter=2)))


def test_bad_inputs_give_clear_errors() -> None:
    op, y = _problem(seed=7)
    for bad in (float("nan"), float("inf")):
        yb = y.clone()
        yb[2, 3] = bad
        with pytest.raises(InputError, match="NaN or Inf"):
            mondeq.solve(op, ReLU(), yb)
    with pytest.raises(InputError, match=r"shape \(batch, 24\)"):
        mondeq.solve(op, ReLU(), y[:, :5])
    with pytest.raises(InputError, match="floating"):
        mondeq.solve(op, ReLU(), y.long())
    with pytest.raises(InputError, match="empty batch"):
        mondeq.solve(op, ReLU(), y[:0])
    # NaN parameters: an error, not a hang or a NaN result
    with torch.no_grad():
        op.A[0, 0] = float("nan")
    for solver in (PeacemanRachford(), ForwardBackward()):
        with pytest.raises(InputError, match="parameters hold NaN"):
            mondeq.solve(op, ReLU(), y, solver)
    # a float32 input to a float64 operator
    op2, _ = _problem(seed=7)
    with pytest.raises(InputError, match="move the model or the input"):
        mondeq.solve(op2, ReLU(), y.float())


def test_bad_options_raise() -> None:
    with pytest.raises(InputError):
        PeacemanRachford(alpha=-1.0)
    with pytest.raises(InputError):
        PeacemanRachford(tol=0.0)
    with pytest.raises(InputError):
        PeacemanRachford(max_iter=0)
    with pytest.raises(TypeError):
        PeacemanRachford(tolerance=1e-3)  # type: ignore[call-arg]
    with pytest.raises(InputError, match="unknown solver"):
        mondeq.make_solver("newton")
    with pytest.raises(InputError, match="stop_mode"):
        mondeq.make_solver("pr", stop_mode="rel")
    with pytest.raises(InputError):
        Anderson(PeacemanRachford(), memory=0)
    s = mondeq.make_solver("dr", anderson=True, tol=1e-3, alpha=0.5)
    assert isinstance(s, Anderson) and s.tol == 1e-3 and s.base.alpha == 0.5
    s2 = s.with_options(tol=1e-5, memory=3)
    assert s2.tol == 1e-5 and s2.memory == 3 and s2.base.alpha == 0.5
    with pytest.raises(TypeError):
        s.with_options(bogus=1)


def test_anderson_safeguard_keeps_convergence() -> None:
    """Even when every extrapolation is refused as ill-conditioned, the plain steps still converge."""
    op, y = _problem(seed=8)
    ref = dense_equilibrium(op.weight().detach(), y)
    plain = mondeq.solve(op, ReLU(), y, DouglasRachford(tol=1e-10, max_iter=2000))
    refused = mondeq.solve(op, ReLU(), y, Anderson(DouglasRachford(tol=1e-10, max_iter=2000),
                                                   max_coefficient=0.5))
    assert refused.stats.iterations == plain.stats.iterations
    torch.testing.assert_close(refused.z, plain.z, atol=0, rtol=0)
    fast = mondeq.solve(op, ReLU(), y, Anderson(DouglasRachford(tol=1e-10, max_iter=2000)))
    assert fast.stats.iterations < plain.stats.iterations
    torch.testing.assert_close(fast.z, ref, atol=1e-8, rtol=0)


def test_anderson_survives_adversarial_extrapolation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Useless least-squares coefficients (that pass the conditioning test) cost at most a factor two."""
    op, y = _problem(seed=10)
    plain = mondeq.solve(op, ReLU(), y, PeacemanRachford(tol=1e-10))
    gen = torch.Generator().manual_seed(0)

    def useless(a, b):
        c = torch.rand(b.shape, generator=gen, dtype=b.dtype) * 3 - 1
        return c, torch.zeros(b.shape[0], dtype=torch.int32)

    monkeypatch.setattr(torch.linalg, "solve_ex", useless)
    sol = mondeq.solve(op, ReLU(), y, Anderson(PeacemanRachford(tol=1e-10)))
    assert sol.stats.converged
    assert sol.stats.iterations <= 2 * plain.stats.iterations + 8
    torch.testing.assert_close(sol.z, plain.z, atol=1e-8, rtol=0)


def test_float32_reaches_tight_tolerances() -> None:
    torch.manual_seed(9)
    op = DenseMonotone(87)
    y = 3 * torch.randn(64, 87)
    y[:8] = -y[:8].abs() - 5  # samples whose equilibrium is near zero
    ref = dense_equilibrium(op.weight().detach(), y)
    for solver in (PeacemanRachford(tol=1e-5), Anderson(PeacemanRachford(tol=1e-5)),
                   DouglasRachford(tol=1e-5), ForwardBackward(tol=1e-5)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sol = mondeq.solve(op, ReLU(), y, solver)
        assert (sol.z.double() - ref).abs().max() <= 1e-3 * ref.abs().max()


class _Identity(mondeq.Activation):
    """``σ(v) = v`` (``f = 0``) whose prox hands back its input itself: the solvers' in-place updates must
    not write into it."""

    def prox(self, v: torch.Tensor, alpha: float) -> torch.Tensor:
        return v

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(v)


@pytest.mark.parametrize("name", list(BASES))
def test_an_activation_that_returns_its_input(name: str) -> None:
    op, y = _problem(seed=5)
    w = op.weight().detach()
    sol = mondeq.solve(op, _Identity(), y, BASES[name](tol=1e-11))  # z = Wz + y: z = (I − W)⁻¹y
    ref = torch.linalg.solve(torch.eye(w.shape[0], dtype=w.dtype) - w, y.T).T
    assert sol.stats.converged
    torch.testing.assert_close(sol.z, ref, atol=1e-8, rtol=0)
    torch.testing.assert_close(sol.pre_activation, sol.z @ w.T + y, atol=1e-9, rtol=0)


class _ReLUWithoutShortcut(ReLU):
    fixes_zero = False


@pytest.mark.parametrize("name,check_every,anderson", [("pr", None, False), ("pr", 1, False), ("dr", 1, False),
                                                        ("pr", None, True)])
def test_the_first_step_from_zero_needs_no_product(name: str, check_every: int | None, anderson: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``prox(0) = 0`` the first splitting step is ``R(αy)``, known before the loop: the same iterates
    and statistics, one resolvent application fewer."""
    op, y = _problem(seed=6)
    frozen = op.frozen()
    resolvent = type(frozen.resolvent(1.0))
    calls = []
    original = resolvent.apply
    monkeypatch.setattr(resolvent, "apply", lambda self, v, add=None: calls.append(1) or original(self, v, add))
    solver = BASES[name](tol=1e-9, check_every=check_every)
    if anderson:
        solver = Anderson(solver)
    results = []
    for act in (ReLU(), _ReLUWithoutShortcut()):
        calls.clear()
        sol = solver.solve(frozen, act, y)
        results.append((sol, len(calls)))
    (fast, n_fast), (slow, n_slow) = results
    assert n_fast == n_slow - 1
    assert fast.stats.iterations == slow.stats.iterations and fast.stats.checked_at == slow.stats.checked_at
    torch.testing.assert_close(fast.z, slow.z, atol=1e-14, rtol=0)
    torch.testing.assert_close(fast.pre_activation, slow.pre_activation, atol=1e-14, rtol=0)


class _Zero(mondeq.Activation):
    """``σ = 0`` (the prox of the indicator of ``{0}``) as a broadcast view of one zero, which cannot be
    written in place."""

    def prox(self, v: torch.Tensor, alpha: float) -> torch.Tensor:
        return v.new_zeros(()).expand_as(v)

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(v)


@pytest.mark.parametrize("name", list(BASES))
def test_an_activation_whose_output_cannot_be_written(name: str) -> None:
    op, y = _problem(seed=5)
    sol = mondeq.solve(op, _Zero(), y, BASES[name](tol=1e-11))
    assert sol.stats.converged
    torch.testing.assert_close(sol.z, torch.zeros_like(y), atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", ["pr", "dr"])
def test_backpropagation_through_the_iterations(name: str) -> None:
    """``Solver.solve`` records a graph when its input asks for one (nothing is updated in place then); the
    unrolled gradient of a tight solve is the implicit one."""
    op, y = _problem(seed=7)
    y = y.clone().requires_grad_()
    sol = BASES[name](tol=1e-12).solve(op.frozen(), ReLU(), y)
    g = torch.randn_like(y)
    (gy,) = torch.autograd.grad(sol.z, y, g)
    ref = dense_input_gradient(op.weight().detach(), sol.z.detach(), y.detach(), g)
    torch.testing.assert_close(gy, ref, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("name,anderson", [("pr", False), ("fb", False), ("pr", True)])
def test_a_tolerance_below_the_precision_floor_stops_early_and_says_so(name: str, anderson: bool) -> None:
    """float32 cannot reach 1e-12: the solve stops long before max_iter, names the stall and the floor, and
    returns each sample's best point."""
    torch.manual_seed(11)
    op = DenseMonotone(40)
    y = 3 * torch.randn(16, 40)
    solver = BASES[name](tol=1e-12, max_iter=50_000)
    if anderson:
        solver = Anderson(solver)
    with pytest.warns(ConvergenceWarning, match=r"stalled at residual .* > tol=1e-12") as record:
        sol = mondeq.solve(op, ReLU(), y, solver)
    assert len(record) == 1 and "float32" in str(record[0].message)
    s = sol.stats
    assert s.stalled and not s.converged and s.iterations < 2000
    assert 1e-12 < s.max_residual < 1e-5  # the floor float32 allows here, reached before the stall
    assert s.max_residual <= s.residual_trace[-1]  # per sample, the best point measured exactly
    if name == "fb" and not anderson:  # every check exact: the best of all of them
        assert s.max_residual <= min(s.residual_trace)
    v = sol.z @ op.weight().detach().T + y
    exact = (sol.z - torch.relu(v)).norm(dim=1) / (sol.z.norm(dim=1) + 1e-2 * y.norm(dim=1))
    torch.testing.assert_close(s.residual, exact, atol=1e-7, rtol=1e-3)
    with pytest.raises(ConvergenceError, match="stalled"):
        mondeq.solve(op, ReLU(), y, solver.with_options(strict=True))


def test_slow_but_steady_progress_is_not_a_stall() -> None:
    """Badly scaled parameters: hundreds of iterations in which the residual does not improve, while the
    iteration's steps keep shrinking; the solve goes on to the tolerance."""
    op, y = _problem(n=16, batch=6, seed=0, scale_a=1e-3, scale_b=1e3)
    alpha = 1.0 / op.frozen().lipschitz
    sol = mondeq.solve(op, ReLU(), y, PeacemanRachford(alpha=alpha, tol=1e-7, max_iter=60_000))
    lowest, since, longest = float("inf"), 0, 0.0
    for k, r in zip(sol.stats.checked_at, sol.stats.residual_trace, strict=True):
        lowest, since = (r, k) if r < lowest else (lowest, since)
        longest = max(longest, (k - since) / max(100, since // 2))
    assert longest >= 1.0  # a plateau of the residual longer than a stall window measured on it
    assert sol.stats.converged and not sol.stats.stalled


class _LyingEstimate(PeacemanRachford):
    """Peaceman–Rachford whose pre-activation estimate is wrong: it says ``Wz + y = z``, which an identity
    activation reads as a residual of 0 at every check."""

    def iteration(self, op, act, y, start=None):
        it = super().iteration(op, act, y, start)
        step = it.step

        def lying(x, check):
            x_next, z, _ = step(x, check)
            return x_next, z, (None if z is None else z.clone())

        it.step = lying
        return it


def test_an_estimated_residual_is_confirmed_before_stopping() -> None:
    op, y = _problem(seed=5)
    w = op.weight().detach()
    sol = _LyingEstimate(tol=1e-10).solve(op.frozen(), _Identity(), y)
    ref = torch.linalg.solve(torch.eye(w.shape[0], dtype=w.dtype) - w, y.T).T
    assert sol.stats.converged and sol.stats.iterations > 5
    torch.testing.assert_close(sol.z, ref, atol=1e-8, rtol=0)
    exact = (sol.z - (sol.z @ w.T + y)).norm(dim=1) / (sol.z.norm(dim=1) + 1e-2 * y.norm(dim=1))
    torch.testing.assert_close(sol.stats.residual, exact, atol=1e-15, rtol=1e-6)


def test_forward_backward_bound_is_tight() -> None:
    """For ``I − W = mI + S`` (S skew: A = 0) the linear forward–backward map ``e ↦ (I − α(I − W))e`` has
    spectral radius ``√(1 − 2αm + α²L²)`` exactly, so steps above ``2m/L²`` diverge: the solver must refuse
    every one of them and accept every step below."""
    torch.manual_seed(12)
    n, m = 12, 0.5
    op = DenseMonotone(n, m=m, dtype=torch.float64)
    with torch.no_grad():
        op.A.zero_()
        op.B.mul_(3.0)
    f = op.frozen()
    w = op.weight().detach()
    eye = torch.eye(n, dtype=w.dtype)
    lip = float(torch.linalg.matrix_norm(eye - w, 2))
    assert f.lipschitz == pytest.approx(lip, rel=1e-9) and lip > 3 * m  # far from 2/L² = 2m/L² · (1/m)
    bound = 2 * m / lip**2
    y = torch.randn(4, n, dtype=w.dtype)
    for factor in (1.02, 1.5, 0.99 / m):  # all below the bound a wrong 2/L² would give
        radius = float(torch.linalg.eigvals(eye - factor * bound * (eye - w)).abs().max())
        assert radius > 1.0  # the linear iteration diverges at this step
        with pytest.raises(UnsafeStepError, match="not provably convergent"):
            mondeq.solve(op, _Identity(), y, ForwardBackward(alpha=factor * bound))
    for factor in (0.98, 0.5):
        sol = mondeq.solve(op, _Identity(), y, ForwardBackward(alpha=factor * bound, tol=1e-9, max_iter=50_000))
        assert sol.stats.converged
    default = mondeq.solve(op, _Identity(), y, ForwardBackward(tol=1e-9, max_iter=50_000))
    assert default.stats.alpha == pytest.approx(bound / 2, rel=1e-9)


def test_forward_backward_refuses_an_operator_without_strong_monotonicity() -> None:
    from mondeq.operators.dense import DenseFrozenOperator

    op, y = _problem(seed=1)
    for m in (0.0, -0.5):
        with pytest.raises(UnsafeStepError, match="m > 0"):
            ForwardBackward().solve(DenseFrozenOperator(op.weight().detach(), m), ReLU(), y)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.7])
@pytest.mark.parametrize("cls", [PeacemanRachford, DouglasRachford])
def test_the_pre_activation_estimate_is_the_exact_product(cls, alpha: float) -> None:
    """Between confirmations Peaceman–Rachford and Douglas–Rachford read ``Wz½ + y`` from the resolvent
    equation instead of a product: at every α the estimate is the product to float64 round-off. The error
    allowed, 1e-11 relative, is ~10³ times the rounding of 24-term products amplified by (1 + α)/α ≤ 4.4; a
    wrong factor in the estimate is off by percents."""
    op, y = _problem(seed=3)
    f = op.frozen()
    it = cls(alpha=alpha).iteration(f, LeakyReLU(0.2), y)
    u = it.x0
    for _ in range(6):
        u, z, v = it.step(u, check=True)
        exact = f.W(z, add=y)
        err = (v - exact).norm(dim=1) / exact.norm(dim=1)
        assert float(err.max()) < 1e-11


@pytest.mark.parametrize("cls", [PeacemanRachford, DouglasRachford])
def test_the_auto_step_is_the_one_the_constants_make_fastest(cls) -> None:
    """``alpha="auto"`` is ``1/√(mL)`` with ``L ≈ ‖I − W‖₂`` (power iteration, against the matrix norm in
    float64). Derivation: the
    Peaceman–Rachford map is the reflected resolvent after the reflected prox (nonexpansive), so it contracts
    by ``ρ(α) = max |1 − αλ|/(1 + αλ)`` over the spectrum ``λ ∈ [m, L]`` of a symmetric ``I − W``, smallest
    at ``α = 1/√(mL)``: ``(√κ − 1)/(√κ + 1)``, 9/11 at ``κ = 100``, against 19/21 at twice or half that step
    and 49/51 at ``α = 1``, about 2× and 5× the iterations to ``tol``; with the identity activation the prox
    reflection is the identity and the rate is ``ρ`` itself. Douglas–Rachford's bound ``(1 + ρ)/2`` is
    smallest at the same step; its rate for one activation need not be (for the identity it is
    ``1/(1 + αm)``), so only its step and its solution are checked."""
    torch.manual_seed(5)
    n, m, lip = 20, 0.5, 50.0
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    spectrum = torch.linspace(m, lip, n, dtype=torch.float64)
    w = torch.eye(n, dtype=torch.float64) - q @ torch.diag(spectrum) @ q.T
    op = DenseFrozenOperator(w, m)
    y = torch.randn(8, n, dtype=torch.float64)
    exact = float(torch.linalg.matrix_norm(torch.eye(n, dtype=torch.float64) - w, ord=2))
    auto = cls(alpha="auto", tol=1e-10, max_iter=5000).solve(op, Identity(), y)
    assert 0.9 * exact <= op.norm_estimate() <= exact * (1 + 1e-12)  # power iteration: from below, close
    assert auto.stats.alpha == pytest.approx(1 / (m * op.norm_estimate()) ** 0.5, rel=1e-12)
    ref = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - w, y.T).T
    torch.testing.assert_close(auto.z, ref, atol=1e-7, rtol=0)
    if cls is PeacemanRachford:
        its = [cls(alpha=a, tol=1e-10, max_iter=5000).solve(op, Identity(), y).stats.iterations
               for a in (0.5 * auto.stats.alpha, 2.0 * auto.stats.alpha, 1.0)]
        assert min(its) > 1.5 * auto.stats.iterations, (auto.stats.iterations, its)


def test_auto_is_the_default_step_of_the_methods_that_derive_one() -> None:
    """Forward–backward's default is already the constants' step ``m/L²``; "auto" is that, not a new one."""
    op, y = _problem(seed=11)
    fb = mondeq.solve(op, ReLU(), y, ForwardBackward(alpha="auto", max_iter=5000))
    assert fb.stats.alpha == mondeq.solve(op, ReLU(), y, ForwardBackward(max_iter=5000)).stats.alpha
    with pytest.raises(InputError, match="'auto'"):
        PeacemanRachford(alpha="fast")  # type: ignore[arg-type]


def test_splitting_checks_estimate_the_pre_activation_without_a_product() -> None:
    """Peaceman–Rachford's checks read ``Wz½ + y`` from the resolvent equation; only a check that looks
    converged pays the exact product to confirm it. So a long solve makes one or two products, not one per
    check, and still reports an exact residual."""
    op, y = _problem(seed=3)
    f = op.frozen()
    products: list[int] = []
    exact_w = f.W

    def counted(z: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        products.append(1)
        return exact_w(z, add=add)

    f.W = counted  # type: ignore[method-assign]
    sol = PeacemanRachford(tol=1e-10, check_every=2).solve(f, ReLU(), y)
    assert sol.stats.converged and sol.stats.iterations >= 12  # at least six checks
    assert 1 <= len(products) <= 2
    fz = torch.relu(exact_w(sol.z, add=y))
    assert float(((sol.z - fz).norm(dim=1) / fz.norm(dim=1)).max()) <= 1e-10 * (1 + 1e-6)  # ‖fz‖ vs ‖z‖
