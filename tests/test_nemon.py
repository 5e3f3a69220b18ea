"""NEMON (SPEC 4.4): the ℓ∞-weighted parameterization, the average iteration and its adjoint, error bounds,
the ℓ∞ Lipschitz bound, gradients, and the guarantee checks of every solver."""

from __future__ import annotations

import math
import re
import warnings
from fractions import Fraction

import pytest
import torch
from conftest import dense_equilibrium, gradcheck_module

from mondeq import ConvergenceWarning, InputError, UnsafeStepError
from mondeq.activations import Diagonal, Identity, ReLU
from mondeq.errors import UnprovenSolverError
from mondeq.implicit import ImplicitBackward, solve
from mondeq.models import NemonConv, NemonFC
from mondeq.normalization import Normalization
from mondeq.operators import DenseMonotone
from mondeq.operators.dense import DenseFrozenOperator
from mondeq.operators.guarantees import L1Contractive, LinfContractive, StronglyMonotone, Symmetric
from mondeq.operators.nemon import ConvNemon, DenseNemon, dense_guarantee
from mondeq.solvers import Anderson, Average, DouglasRachford, ForwardBackward, PeacemanRachford

F64 = torch.float64
SCALES = [1e-3, 1.0, 1e3]


def _dense(n: int, gamma: float, t_scale: float, d_scale: float, seed: int) -> DenseNemon:
    torch.manual_seed(seed)
    op = DenseNemon(n, gamma, dtype=F64)
    with torch.no_grad():
        op.T.mul_(t_scale)
        op.delta.normal_().mul_(d_scale)
    return op


def _conv(gamma: float, t_scale: float, d_scale: float, seed: int, size=(5, 4), channels=3, k=3) -> ConvNemon:
    torch.manual_seed(seed)
    op = ConvNemon(channels, size, k, gamma, dtype=F64)
    with torch.no_grad():
        op.K.mul_(t_scale)
        op.delta.normal_().mul_(d_scale)
    return op


def _matrix(apply, shape: tuple[int, ...]) -> torch.Tensor:
    """The dense matrix of a linear map on samples of ``shape`` (column j: the map of the j-th basis vector)."""
    n = math.prod(shape)
    with torch.no_grad():
        return apply(torch.eye(n, dtype=F64).view(n, *shape)).reshape(n, -1).T


def _weights(op) -> torch.Tensor:
    w = torch.exp(op.delta.detach())
    return w if isinstance(op, DenseNemon) else w.repeat_interleave(math.prod(op.size))


def _measure(w: torch.Tensor, weights: torch.Tensor) -> tuple[float, float]:
    """``μ∞(ΔWΔ⁻¹)`` and ``minᵢ Wᵢᵢ`` from the dense matrix."""
    m = weights[:, None] * w / weights[None, :]
    diag = m.diagonal()
    return float((diag + m.abs().sum(1) - diag.abs()).max()), float(diag.min())


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("t_scale", SCALES)
@pytest.mark.parametrize("d_scale", [0.0, 1.0, 3.0])
def test_measure_is_below_gamma_from_the_dense_matrix(kind: str, t_scale: float, d_scale: float) -> None:
    """μ∞,Δ(W) ≤ γ computed from the materialised matrix (badly scaled T and Δ included), the guarantee's μ
    and minᵢ Wᵢᵢ are those of the matrix, and Wᵀ is the transpose of W."""
    for seed, gamma in enumerate([0.0, 0.5, -0.7]):
        op = _dense(7, gamma, t_scale, d_scale, seed) if kind == "dense" else _conv(gamma, t_scale, d_scale, seed)
        f = op.frozen()
        w = _matrix(f.W, op.shape)
        assert torch.allclose(_matrix(f.WT, op.shape), w.T, rtol=0, atol=1e-12 * float(w.abs().max()))
        assert torch.allclose(w @ torch.ones(len(w), dtype=F64), f.W(torch.ones(1, *op.shape, dtype=F64)).flatten())
        mu, diag = _measure(w, _weights(op))
        g = f.guarantee
        assert isinstance(g, LinfContractive)
        weights = _weights(op)
        # the measure is a sum of n entries of ΔWΔ⁻¹, each rounded a few times in float64
        tol = 64 * torch.finfo(F64).eps * len(w) * (1 + float((weights[:, None] * w / weights[None, :]).abs().max()))
        assert mu <= gamma + tol
        assert mu <= g.mu + tol and g.mu <= gamma + tol
        assert g.min_diagonal == pytest.approx(diag, abs=tol)
        assert float(op.measure().detach()) == pytest.approx(g.mu, abs=tol)  # the exact-arithmetic formula


def _exact_measure(w: torch.Tensor) -> Fraction:
    """``μ∞(W)`` (``Δ = I``) of the stored values in exact rational arithmetic."""
    rows = [[Fraction(float(x)) for x in row] for row in w.tolist()]
    return max(r[i] + sum(abs(x) for j, x in enumerate(r) if j != i) for i, r in enumerate(rows))


def test_the_reported_measure_bounds_the_exact_one_of_badly_scaled_rows() -> None:
    """The guarantee's μ is at least the exact measure of the stored matrix although float64 loses a summand:
    rows ``(−2²⁰, 2²⁰ − 2⁻⁴, 2⁻⁴⁰)`` (cyclic) sum to ``2²¹ − 2⁻⁴`` in float64 (2⁻⁴⁰ is below half an ulp of 2²⁰,
    whatever the order), so the computed measure ``−2⁻⁴`` is 2⁻⁴⁰ below the exact one; the rounding slack,
    relative to the rows' magnitude ``2²¹``, covers it. Random badly scaled float32 rows as well."""
    big, small = 2.0**20, 2.0**-40
    w = torch.tensor([[-big, big - 2.0**-4, small], [small, -big, big - 2.0**-4], [big - 2.0**-4, small, -big]])
    ones = torch.ones(3)
    computed, _ = _measure(w.double(), ones.double())
    exact = _exact_measure(w)
    assert Fraction(computed) < exact == Fraction(-(2**-4)) + Fraction(small)  # float64 alone is unsound here
    mu = dense_guarantee(w, ones).mu
    assert Fraction(mu) >= exact
    assert mu - float(exact) < 1e-6  # and the slack stays a rounding allowance
    gen = torch.Generator().manual_seed(0)
    for scale in (1e-6, 1.0, 1e2, 1e4):  # larger: float32 rounds the diagonal by more than 1 − γ
        t = torch.randn(24, 24, generator=gen) * scale * torch.logspace(-6, 0, 24)[torch.randperm(24, generator=gen)]
        w = torch.diag(0.5 - t.abs().sum(1)) + t  # the NEMON form with γ = 0.5, rounded to float32
        assert Fraction(dense_guarantee(w, torch.ones(24)).mu) >= _exact_measure(w)


def test_a_nemon_matrix_need_not_be_l2_monotone() -> None:
    """Why the splitting solvers are refused: a W of this form with μ∞,Δ(W) = 0.5 and sym(I − W) indefinite."""
    op = DenseNemon(2, 0.5, dtype=F64)
    with torch.no_grad():
        op.T.copy_(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
        op.delta.copy_(torch.tensor([0.0, math.log(40.0)]))
    w = op.weight().detach()
    assert op.frozen().guarantee.mu == pytest.approx(0.5)
    lam = torch.linalg.eigvalsh(torch.eye(2, dtype=F64) - (w + w.T) / 2)
    assert float(lam.min()) < -9


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("t_scale", SCALES)
def test_average_iteration_contracts_at_the_proved_rate(kind: str, t_scale: float) -> None:
    """‖T(z₁) − T(z₂)‖∞,Δ ≤ (1 − α*(1 − μ⁺))‖z₁ − z₂‖∞,Δ for the ReLU average step on random pairs, and the
    rate is attained by the linear (identity) iteration at the pair aligned with the row of largest measure."""
    op = _dense(6, 0.3, t_scale, 1.0, 4) if kind == "dense" else _conv(0.3, t_scale, 1.0, 4)
    f = op.frozen()
    g = f.guarantee
    alpha = g.alpha_max
    rho = g.rate(alpha)
    y = torch.randn(200, *op.shape, dtype=F64) * t_scale
    z1, z2 = torch.randn_like(y) * t_scale, torch.randn_like(y) * t_scale

    def step(z, act):
        return torch.lerp(z, act(f.W(z, add=y)), alpha)

    ratio = g.norm(step(z1, ReLU()) - step(z2, ReLU())) / g.norm(z1 - z2)
    assert float(ratio.max()) <= rho * (1 + 1e-9)
    # tightness: e = Δ⁻¹ sign(M_i·) at the row i of largest measure; the linear step's Jacobian maps it to ρ
    w = _matrix(f.W, op.shape)
    weights = _weights(op)
    m = weights[:, None] * w / weights[None, :]
    rows = m.diagonal() + m.abs().sum(1) - m.diagonal().abs()
    i = int(rows.argmax())
    e = torch.sign(m[i]) / weights
    e[i] = 1 / weights[i]
    e = e.view(1, *op.shape)
    jac = torch.lerp(e, f.W(e), alpha)
    assert float(g.norm(jac) / g.norm(e)) == pytest.approx(rho, rel=1e-9)
    assert rho == pytest.approx(1 - alpha * (1 - max(float(rows.max()), 0.0)), abs=1e-9)


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("t_scale", SCALES)
def test_the_adjoint_iteration_contracts_in_the_dual_norm(kind: str, t_scale: float) -> None:
    """The backward's iteration h⁺ = (1 − α)h + α(WᵀDh + g) contracts in ‖Δ⁻¹·‖₁ with the forward's factor for
    random D in [0, 1]; the iteration on u = Dh (Jacobian (1 − α)I + αDWᵀ) need not, and here does not."""
    op = _dense(6, 0.3, t_scale, 1.0, 5) if kind == "dense" else _conv(0.3, t_scale, 1.0, 5)
    f = op.frozen()
    alpha, rho = f.guarantee.alpha_max, f.guarantee.rate(f.guarantee.alpha_max)
    torch.manual_seed(0)
    d = (torch.rand(1, *op.shape, dtype=F64) > 0.5).to(F64) * torch.rand(1, *op.shape, dtype=F64)
    adj = f.transpose().right_scaled(d)
    dual = adj.guarantee
    assert isinstance(dual, L1Contractive) and dual.alpha_max >= alpha and dual.mu <= max(f.guarantee.mu, 0) + 1e-12
    h1, h2 = torch.randn(300, *op.shape, dtype=F64), torch.randn(300, *op.shape, dtype=F64)
    ratio = dual.norm(torch.lerp(h1, adj.W(h1), alpha) - torch.lerp(h2, adj.W(h2), alpha)) / dual.norm(h1 - h2)
    assert float(ratio.max()) <= rho * (1 + 1e-9)


def test_the_adjoint_in_u_form_would_not_contract_in_the_dual_norm() -> None:
    """Why the backward iterates on h: for W = [[0, 0], [3, −3]] (μ∞ = 0, α* = 1/4) and D = diag(1, 0), the
    u-iteration's Jacobian (1 − α)I + αDWᵀ has ℓ1 norm 1.5 > 1, the h-iteration's (1 − α)I + αWᵀD has 3/4."""
    op = DenseNemon(2, 0.0, dtype=F64)
    with torch.no_grad():
        op.T.copy_(torch.tensor([[0.0, 0.0], [3.0, 0.0]]))
    f = op.frozen()
    alpha = f.guarantee.alpha_max
    assert alpha == pytest.approx(0.25) and f.guarantee.mu == pytest.approx(0.0, abs=1e-12)
    w, d, eye = f.weight, torch.diag(torch.tensor([1.0, 0.0], dtype=F64)), torch.eye(2, dtype=F64)
    assert float(torch.linalg.matrix_norm((1 - alpha) * eye + alpha * d @ w.T, ord=1)) == pytest.approx(1.5)
    assert float(torch.linalg.matrix_norm((1 - alpha) * eye + alpha * w.T @ d, ord=1)) == pytest.approx(0.75)


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("gamma", [0.2, -2.0])
def test_error_bound_holds_against_a_tight_solve(kind: str, gamma: float) -> None:
    """The a-posteriori bound ‖Δ(z − z*)‖∞ ≤ ‖Δr‖∞/(1 − μ⁺) of a loose solve holds against a tight dense-
    checked one, forward and adjoint (‖Δ⁻¹(h − h*)‖₁), and is not vacuous (within 100× of the true error)."""
    op = _dense(8, gamma, 1.0, 1.0, 6) if kind == "dense" else _conv(gamma, 1.0, 1.0, 6)
    f = op.frozen()
    y = torch.randn(6, *op.shape, dtype=F64)
    loose = solve(f, ReLU(), y, Average(tol=1e-3))
    tight = solve(f, ReLU(), y, Average(tol=1e-14, max_iter=20000))
    if kind == "dense":
        assert torch.allclose(tight.z, dense_equilibrium(f.weight, y), atol=1e-12)
    err = f.guarantee.norm(loose.z - tight.z)
    assert (err <= loose.stats.error_bound * (1 + 1e-9)).all()
    assert (loose.stats.error_bound <= 100 * err.clamp_min(1e-14)).all()
    d = ReLU().derivative(tight.pre_activation)
    g = torch.randn_like(y)
    adj = f.transpose().right_scaled(d)
    h_loose = solve(adj, Identity(), g, Average(tol=1e-3))
    h_tight = solve(adj, Identity(), g, Average(tol=1e-14, max_iter=20000))
    assert (adj.guarantee.norm(h_loose.z - h_tight.z) <= h_loose.stats.error_bound * (1 + 1e-9)).all()


def test_l2_error_bound_holds_against_a_dense_solve() -> None:
    """The monDEQ bound ‖z − z*‖₂ ≤ (1 + L)‖r‖₂/m of a loose Peaceman–Rachford solve."""
    torch.manual_seed(7)
    op = DenseMonotone(10, 0.3, dtype=F64)
    f = op.frozen()
    y = torch.randn(6, 10, dtype=F64)
    sol = solve(f, ReLU(), y, PeacemanRachford(tol=1e-3))
    err = torch.linalg.vector_norm(sol.z - dense_equilibrium(f.weight, y), dim=1)
    assert (err <= sol.stats.error_bound * (1 + 1e-9)).all()


@pytest.mark.parametrize("kind", ["fc", "conv"])
def test_lipschitz_bound_is_the_dense_one_and_above_empirical_slopes(kind: str) -> None:
    """linf_bound equals ‖CRΔ⁻¹‖∞‖ΔU diag(1/std)‖∞/(1 − μ) from the materialised maps, per pair too; and no
    random or gradient-found pair of inputs exceeds it."""
    torch.manual_seed(8)
    std = [0.3]
    shape = (1, 6, 6) if kind == "fc" else (1, 8, 8)
    model = (NemonFC(shape, 4, hidden=9, gamma=0.2) if kind == "fc"
             else NemonConv(shape, 4, channels=3, pool=4, gamma=0.2)).double()
    op = model.mon.operator
    with torch.no_grad():
        op.delta.normal_()
    model.mon.solver = model.mon.eval_solver = Anderson(Average(tol=1e-10, max_iter=20000))
    total, pairs, state = (t.detach() for t in model.linf_bound(Normalization((0.0,), tuple(std))))
    weights = _weights(op)
    mu = op.frozen().guarantee.mu
    flat = kind == "fc"

    def input_map(x):  # U diag(1/std), without the bias
        x = x.flatten(1) if flat else x
        return (model.mon.input_map(x / std[0]) - model.mon.input_map(torch.zeros_like(x[:1]))).flatten(1)

    u = _matrix(input_map, shape)
    if kind == "fc":
        c = model.head.weight.detach()
    else:
        c = _matrix(lambda z: model.head(torch.nn.functional.avg_pool2d(z, 4).flatten(1)) - model.head.bias,
                    op.shape)
    cd = c / weights[None, :]
    assert float(state) == pytest.approx(float((weights[:, None] * u).abs().sum(1).max()) / (1 - mu), rel=1e-9)
    assert float(total) == pytest.approx(float(cd.abs().sum(1).max()) * float(state), rel=1e-9)
    assert torch.allclose(pairs, (cd[:, None] - cd[None]).abs().sum(2) * state, rtol=1e-9)
    model.eval()
    x1 = torch.rand(16, *shape, dtype=F64)
    x2 = (x1 + 0.01 * torch.randn_like(x1)).requires_grad_(True)
    best = 0.0
    for _ in range(10):  # gradient ascent on the slope
        diff = model(x1 / std[0]) - model(x2 / std[0])
        slope = diff.abs().amax(1) / (x1 - x2).flatten(1).abs().amax(1)
        best = max(best, float(slope.detach().max()))
        (grad,) = torch.autograd.grad(slope.sum(), x2)
        with torch.no_grad():
            x2 += 1e-3 * grad.sign()
    assert 0 < best <= float(total)


def test_gradcheck_dense_and_conv() -> None:
    torch.manual_seed(9)
    for model, x in ((NemonFC((5,), 3, hidden=6, gamma=0.3), torch.randn(3, 5)),
                     (NemonConv((1, 4, 4), 3, channels=2, pool=2, gamma=0.3), torch.randn(2, 1, 4, 4))):
        model = model.double()
        with torch.no_grad():
            model.mon.operator.delta.normal_()
        model.mon.solver = Anderson(Average(tol=1e-13, max_iter=20000))
        assert gradcheck_module(model, x.double())
        stats = model.mon.last_solve
        assert stats.forward.solver == "anderson(average)" and stats.forward.converged


def test_anderson_keeps_the_guarantee_and_converges_faster() -> None:
    op = _dense(40, 0.0, 1.0, 1.0, 10)
    f = op.frozen()
    y = torch.randn(16, 40, dtype=F64)
    plain = solve(f, ReLU(), y, Average(tol=1e-10, max_iter=5000))
    fast = solve(f, ReLU(), y, Anderson(Average(tol=1e-10, max_iter=5000)))
    assert fast.stats.converged and fast.stats.iterations < plain.stats.iterations
    assert torch.allclose(fast.z, plain.z, atol=1e-8)


def test_a_stalled_average_solve_is_reported_not_returned_as_converged() -> None:
    op = _dense(30, 0.0, 1.0, 1.0, 11)
    f = DenseNemon(30, 0.0)  # float32 at a tolerance float32 cannot reach
    f.load_state_dict({k: v.float() for k, v in op.state_dict().items()})
    y = torch.randn(8, 30)
    with pytest.warns(ConvergenceWarning, match="stalled"):
        sol = solve(f, ReLU(), y, Average(tol=1e-12, max_iter=100000))
    assert sol.stats.stalled and not sol.stats.converged and sol.stats.iterations < 100000


# every solver against every kind of guarantee: which it has a proof for
_LINF = LinfContractive(0.5, torch.ones(3), -1.0)
_L1 = L1Contractive(0.5, torch.ones(3), -1.0)
_L2 = StronglyMonotone(0.5, lambda: 2.0)
_SYM = Symmetric(0.5, lambda: 2.0)
SOLVER_TABLE = [
    # solver, guarantee, activation, proved
    *[(s, g, ReLU(), g in (_L2, _SYM)) for s in ("fb", "pr", "dr", "pr+anderson") for g in (_LINF, _L1, _L2, _SYM)],
    *[(s, g, ReLU(), g is _LINF) for s in ("avg", "avg+anderson") for g in (_LINF, _L1, _L2, _SYM)],
    ("avg", _L1, Identity(), True),
    ("avg", _L1, Diagonal(torch.full((3,), 0.5)), False),
    ("avg+anderson", _L1, Identity(), True),
]
_SOLVERS = {"fb": ForwardBackward(), "pr": PeacemanRachford(), "dr": DouglasRachford(), "avg": Average(),
            "pr+anderson": Anderson(PeacemanRachford()), "avg+anderson": Anderson(Average())}


@pytest.mark.parametrize("name,guarantee,act,proved", SOLVER_TABLE)
def test_every_solver_refuses_what_it_has_no_proof_for(name, guarantee, act, proved) -> None:
    solver = _SOLVERS[name]
    op = DenseFrozenOperator(0.1 * torch.eye(3), guarantee=guarantee)
    y = torch.ones(2, 3)
    if proved:
        assert solver.refusal(guarantee, act) is None
        assert solver.solve(op, act, y).stats.converged
    else:
        with pytest.raises(UnprovenSolverError, match=re.escape(f"{solver.name} is not proved for")) as e:
            solver.solve(op, act, y)
        assert "\n" not in str(e.value)


def test_average_step_is_alpha_star_and_a_larger_one_is_refused() -> None:
    op = _dense(5, 0.0, 1.0, 0.0, 12)
    f = op.frozen()
    star = 1 / (1 - min(float(f.weight.diagonal().min()), 0.0))
    y = torch.randn(2, 5, dtype=F64)
    assert solve(f, ReLU(), y, Average()).stats.alpha == pytest.approx(star)
    assert solve(f, ReLU(), y, Average(alpha=star / 2)).stats.alpha == star / 2
    with pytest.raises(UnsafeStepError, match="α\\*"):
        solve(f, ReLU(), y, Average(alpha=star * 1.01))
    with pytest.raises(UnsafeStepError, match="m > 0"):
        ForwardBackward().solve(DenseFrozenOperator(torch.eye(3), 0.0), ReLU(), torch.ones(1, 3))


@pytest.mark.parametrize("name", ["fb", "pr", "dr", "avg", "avg+anderson"])
def test_a_warm_start_at_the_solution_stops_at_the_first_check(name: str) -> None:
    solver = _SOLVERS[name]
    if name.startswith("avg"):
        op = _dense(12, 0.0, 1.0, 1.0, 13).frozen()
    else:
        torch.manual_seed(13)
        op = DenseMonotone(12, 0.5, dtype=F64).frozen()
    y = torch.randn(4, 12, dtype=F64)
    exact = solve(op, ReLU(), y, solver.with_options(tol=1e-13, max_iter=20000))
    warm = solve(op, ReLU(), y, solver.with_options(tol=1e-10), start=exact.z)
    assert warm.stats.iterations <= 2 and warm.stats.converged
    with pytest.raises(InputError, match="start"):
        solve(op, ReLU(), y, solver, start=exact.z[:2])


def test_gamma_must_be_below_one_and_kernels_odd() -> None:
    for bad in (1.0, 2.0, float("nan")):
        with pytest.raises(InputError, match="gamma"):
            DenseNemon(3, bad)
    for k in (2, 4, 0):  # an even kernel has no centre tap for the "same" padding
        with pytest.raises(InputError, match="odd kernel"):
            ConvNemon(2, (6, 6), k)
    assert ConvNemon(2, (6, 6), 5).kernel_size == 5


def test_backward_uses_the_pre_activation_form() -> None:
    """The implicit backward of a NEMON equals the dense ∂ℓ/∂y = D(I − WᵀD)⁻¹g."""
    from conftest import dense_input_gradient

    op = _dense(9, 0.1, 1.0, 1.0, 14)
    f = op.frozen()
    y = torch.randn(5, 9, dtype=F64)
    sol = solve(f, ReLU(), y, Average(tol=1e-13, max_iter=20000))
    g = torch.randn_like(y)
    d = ReLU().derivative(sol.pre_activation)
    u, stats = ImplicitBackward().adjoint(f, d, g, Average(tol=1e-13, max_iter=20000))
    assert stats is not None and stats.converged
    assert torch.allclose(u, dense_input_gradient(f.weight, sol.z, y, g), atol=1e-10)


def test_lipschitz_regulariser_lowers_the_bound(tmp_path) -> None:
    """Training with --lipschitz-reg ends with a smaller certified ℓ∞ bound than without; a monDEQ refuses it."""
    from mondeq.training import TrainConfig, model_from_checkpoint, train

    bounds = []
    for reg in (0.0, 1.0):
        out = tmp_path / f"reg{reg}"
        train(TrainConfig(model="nemon-fc", epochs=1, train_subset=1000, test_subset=100, batch_size=50,
                          lipschitz_reg=reg, out=str(out)), progress=False, log=lambda s: None)
        model, splits, _ = model_from_checkpoint(out / "checkpoint.pt")
        bounds.append(float(model.linf_bound(splits.normalization)[0].detach()))
    assert bounds[1] < 0.5 * bounds[0]
    with pytest.raises(InputError, match="NEMON"):
        train(TrainConfig(model="fc", epochs=1, train_subset=100, test_subset=100, lipschitz_reg=0.1),
              progress=False, log=lambda s: None)


def test_no_attack_breaks_a_certified_nemon_point(tmp_path) -> None:
    """Point by point at a radius where part of the test set is certified: a 50-step ℓ∞ PGD never changes a
    certified prediction, and does break some uncertified ones."""
    from mondeq.robustness import certified_radius, pgd
    from mondeq.training import TrainConfig, model_from_checkpoint, train

    train(TrainConfig(model="nemon-fc", epochs=2, train_subset=2000, test_subset=200, lipschitz_reg=0.002,
                      out=str(tmp_path)), progress=False, log=lambda s: None)
    model, splits, _ = model_from_checkpoint(tmp_path / "checkpoint.pt", eval_tol=1e-4, test_subset=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ok, radius, _ = certified_radius(model, splits.test_images, splits.test_labels, splits.normalization, "inf")
    eps = float(radius[ok].median())
    certified = ok & (radius > eps)
    assert certified.double().mean() > 0.2
    adv = pgd(model, splits.normalization, splits.test_images, splits.test_labels, eps, "inf", steps=30)
    with torch.no_grad():
        survived = model(splits.standardize(adv)).argmax(1) == splits.test_labels
    assert survived[certified].all()
    assert (~survived[ok & ~certified]).any()


def test_the_certificate_accounts_for_the_solve_error() -> None:
    """A radius certified from a loose evaluation solve (tol 1e-2) is the margin radius less e/‖ΔU‖∞·(1 − μ), e
    the solve's error bound, so it never exceeds what a tight solve allows (its radius plus its own error
    term, an upper bound of the exact radius); some radii stay positive (not vacuous)."""
    from mondeq.data import load_dataset
    from mondeq.robustness import certified_radii, certified_radius

    torch.manual_seed(15)
    splits = load_dataset("mnist-mini", train_subset=1, test_subset=100)
    model = NemonFC(hidden=30, gamma=0.5)
    with torch.no_grad():
        model.head.weight.mul_(30.0)  # margins large enough to certify something
    _, pairs, state = (t.detach().double() for t in model.linf_bound(splits.normalization))
    x = splits.normalize(splits.test_images)
    found = []
    for solver in (Average(tol=1e-2), Anderson(Average(tol=1e-5, max_iter=5000))):
        model.mon.eval_solver = solver
        radius = certified_radius(model, splits.test_images, splits.test_labels, splits.normalization, "inf")[1]
        with torch.no_grad():
            margin_radius = certified_radii(model(x).double(), pairs)
        slack = model.mon.last_solve.forward.error_bound.double() / state
        found.append((radius, margin_radius, slack))
    (loose, loose_margin, loose_slack), (_, tight_margin, tight_slack) = found
    assert torch.allclose(loose, (loose_margin - loose_slack).clamp_min(0.0))
    assert (loose <= tight_margin + tight_slack).all()
    assert (loose > 0).any() and float(loose_slack.min()) > 10 * float(tight_slack.max())


def test_a_solver_of_another_family_is_refused_before_training() -> None:
    """`--solver pr` on a NEMON (and `avg` on a monDEQ) fails when the model is built, before any data is
    used; a NaN regulariser weight and a NaN starting point are refused."""
    from mondeq.data import load_dataset
    from mondeq.training import TrainConfig, build_from_config

    splits = load_dataset("mnist-mini", train_subset=1, test_subset=1)
    for model, solver in (("nemon-fc", "pr"), ("fc", "avg")):
        with pytest.raises(UnprovenSolverError):
            build_from_config(TrainConfig(model=model, solver=solver), splits)
    with pytest.raises(InputError, match="lipschitz-reg"):
        TrainConfig(lipschitz_reg=float("nan")).validate()
    op = _dense(4, 0.0, 1.0, 0.0, 16).frozen()
    with pytest.raises(InputError, match="start"):
        solve(op, ReLU(), torch.ones(1, 4, dtype=F64), start=torch.full((1, 4), float("nan"), dtype=F64))
