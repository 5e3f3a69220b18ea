"""Safeguarded Anderson acceleration (SPEC 2): it reaches every tolerance its base method reaches, never
reports a point its safeguard refused, and its summable bound binds."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import mondeq
from mondeq import Anderson, ConvMonotone, DenseMonotone, DouglasRachford, ForwardBackward, PeacemanRachford, ReLU
from mondeq.operators.dense import DenseFrozenOperator
from mondeq.solvers.anderson import _AndersonIteration

BASES = {"fb": ForwardBackward, "pr": PeacemanRachford, "dr": DouglasRachford}
PRECISIONS = {torch.float64: 1e-12, torch.float32: 1e-6}


def _dense_problem(n: int, batch: int, seed: int, scale: float, dtype: torch.dtype):
    torch.manual_seed(seed)
    op = DenseMonotone(n, m=0.5, dtype=dtype)
    with torch.no_grad():
        op.A.mul_(scale)
        op.B.mul_(scale)
    return op, 2 * torch.randn(batch, n, dtype=dtype)


def _conv_problem(seed: int, scale: float, dtype: torch.dtype):
    torch.manual_seed(seed)
    op = ConvMonotone(2, (5, 6), 3, m=0.5, dtype=dtype)
    with torch.no_grad():
        op.B.normal_()
        op.g.fill_(scale)
        op.h.fill_(scale)
    return op, torch.randn(3, 2, 5, 6, dtype=dtype)


def _compare(op, y, base_name: str, tol: float) -> None:
    """Where the base method reaches ``tol`` (float32 cannot always reach 1e-6: a sample whose equilibrium
    is nearly zero has a floor of about ``eps·‖y‖/(10⁻²‖y‖) ≈ 1e-5``), Anderson reaches it too."""
    base = BASES[base_name](tol=tol, max_iter=20_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mondeq.ConvergenceWarning)
        plain = mondeq.solve(op, ReLU(), y, base)
    assume(plain.stats.converged)
    fast = mondeq.solve(op, ReLU(), y, Anderson(base))
    assert fast.stats.converged and fast.stats.max_residual <= tol, (plain.stats, fast.stats)
    # each refused extrapolation is followed by a base step: at most about twice the base's iterations
    assert fast.stats.iterations <= 2 * plain.stats.iterations + 10, (plain.stats, fast.stats)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(base=st.sampled_from(sorted(BASES)), dtype=st.sampled_from(list(PRECISIONS)), seed=st.integers(0, 10**6),
       n=st.integers(4, 30), scale=st.sampled_from([0.1, 1.0, 3.0]))
def test_anderson_reaches_every_tolerance_its_base_reaches_dense(base, dtype, seed, n, scale) -> None:
    op, y = _dense_problem(n, 5, seed, scale, dtype)
    _compare(op, y, base, PRECISIONS[dtype])


@settings(max_examples=6, deadline=None, derandomize=True)
@given(base=st.sampled_from(sorted(BASES)), dtype=st.sampled_from(list(PRECISIONS)), seed=st.integers(0, 10**6),
       scale=st.sampled_from([0.3, 1.0]))
def test_anderson_reaches_every_tolerance_its_base_reaches_conv(base, dtype, seed, scale) -> None:
    op, y = _conv_problem(seed, scale, dtype)
    _compare(op, y, base, PRECISIONS[dtype])


# a problem met inside the gradcheck of ``Anderson(ForwardBackward)`` (W of DenseMonotone(6, m=0.5) and one
# perturbed y), as exact float64 values
_STALLED_W = [
    ["0x1.d25e3296d6328p-5", "-0x1.3c1f01997d508p-3", "-0x1.0e0346f7ab7b5p-2",
     "-0x1.fad2260b05828p-4", "-0x1.eaedd50c22410p-8", "0x1.507353637486ap-3"],
    ["0x1.b46fe41ba5dc6p-2", "-0x1.53a25481d9160p-6", "0x1.06fa4f3bc4fa3p-2",
     "0x1.a3dec91780728p-5", "-0x1.23a5efb555177p-6", "-0x1.6114d36ee8580p-3"],
    ["0x1.dc5a92fc08cbfp-3", "-0x1.41328322f3a9ep-3", "0x1.10e7771964098p-2",
     "-0x1.c947a7b143027p-2", "-0x1.3aca0bdb9a180p-2", "-0x1.e37ac2004b12ep-7"],
    ["-0x1.637cdbc486718p-1", "0x1.f9daba610f3aep-3", "0x1.75f27bfe029a1p-2",
     "0x1.bb6f9dad8ec98p-5", "0x1.e919f815eaee0p-4", "0x1.dcd6e80f46974p-1"],
    ["-0x1.7fb6c12aa41fcp-3", "0x1.04acb3fc33cbap-4", "0x1.6fec379d47920p-6",
     "-0x1.df5e8a9d736e6p-3", "0x1.11cc4344531f0p-4", "0x1.5b04059b57349p-4"],
    ["0x1.9805cb43361cfp-2", "0x1.8152162a81a78p-7", "0x1.b3773e15a9d3cp-5",
     "-0x1.29c691a9b8cd4p-1", "0x1.6376d7e73537ep-3", "0x1.2d117fd51253ep-3"],
]
_STALLED_Y = [
    ["0x1.df5fce0481e59p-1", "0x1.447d6f1568013p-3", "0x1.1bdec263668f5p+0",
     "-0x1.317afc009c1c9p+0", "-0x1.7b539fac62bb0p+0", "0x1.14eefc6b04bf5p+0"],
    ["-0x1.909a76b04fc5dp+1", "-0x1.129a56e9ef04ep+1", "-0x1.529b82e1ad60fp-2",
     "-0x1.02374a12e8306p+1", "0x1.9e827379a1132p-2", "-0x1.16569732d6800p+1"],
    ["0x1.26d89c84bd612p-3", "-0x1.44932714d2ca4p-1", "0x1.b7ec3005cc5c0p-3",
     "-0x1.faec6fb5c4166p-2", "-0x1.de76b32dd32c0p-6", "-0x1.9139049ebcf44p-3"],
]


def test_the_gradcheck_problem_that_stalled() -> None:
    """Plain forward–backward reaches 1e-12 in about 250 iterations; the accelerated one used to stop at
    max_iter=20000 at 4.3e-10 on AVX-512 kernels: its kept points had converged, but every check landed on a
    candidate the safeguard then refused, and that candidate's residual was what the driver saw."""
    w = torch.tensor([[float.fromhex(v) for v in row] for row in _STALLED_W], dtype=torch.float64)
    y = torch.tensor([[float.fromhex(v) for v in row] for row in _STALLED_Y], dtype=torch.float64)
    op = DenseFrozenOperator(w, 0.5)
    plain = ForwardBackward(tol=1e-12, max_iter=20_000).solve(op, ReLU(), y)
    fast = Anderson(ForwardBackward(tol=1e-12, max_iter=20_000)).solve(op, ReLU(), y)
    assert plain.stats.converged and fast.stats.converged
    assert fast.stats.iterations <= plain.stats.iterations, (plain.stats, fast.stats)


def _fb_step_norm(op, y: torch.Tensor, z: torch.Tensor, alpha: float) -> torch.Tensor:
    """``‖T(z) − z‖`` of forward–backward with step ``alpha``, computed independently of the solver."""
    w = op.weight().detach()
    return (torch.relu((1 - alpha) * z + alpha * (z @ w.T + y)) - z).norm(dim=1)


def _useless_coefficients(monkeypatch: pytest.MonkeyPatch, seed: int = 0) -> None:
    """Least-squares 'solutions' that pass the conditioning test but extrapolate to poor points."""
    gen = torch.Generator().manual_seed(seed)

    def useless(a, b):
        c = torch.rand(b.shape, generator=gen, dtype=b.dtype) * 3 - 1
        return c, torch.zeros(b.shape[0], dtype=torch.int32)

    monkeypatch.setattr(torch.linalg, "solve_ex", useless)


def test_refused_candidates_are_never_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a check at every iteration and poor extrapolations, the points reported at the checks are kept
    points: their step ‖T(z) − z‖ never increases (base steps contract it, kept extrapolations do not increase
    it), although the iterates themselves jump whenever an extrapolation is refused."""
    op, y = _dense_problem(16, 6, seed=3, scale=1.0, dtype=torch.float64)
    reported, pre, iterates = [], [], []
    original = _AndersonIteration.step

    def recording(self, x, check):
        out = original(self, x, check)
        iterates.append(x.clone())
        if check:
            reported.append(out[1].clone())
            pre.append(out[2].clone())
        return out

    monkeypatch.setattr(_AndersonIteration, "step", recording)
    _useless_coefficients(monkeypatch)
    solver = Anderson(ForwardBackward(tol=1e-10, max_iter=3000, check_every=1))
    sol = mondeq.solve(op, ReLU(), y, solver)
    assert sol.stats.converged
    alpha = sol.stats.alpha
    at_reported = torch.stack([_fb_step_norm(op, y, z, alpha) for z in reported])
    at_iterates = torch.stack([_fb_step_norm(op, y, x, alpha) for x in iterates])
    jumps = at_iterates[1:] / at_iterates[:-1].clamp_min(1e-300)
    assert jumps.max() > 10  # refusals happened: some iterate was far worse than the one before
    growth = at_reported[1:] - at_reported[:-1]
    assert (growth <= 1e-12 * at_reported[:-1] + 1e-15).all(), growth.max()
    w = op.weight().detach()
    for z, v in zip(reported, pre, strict=True):  # each reported pre-activation is that of its point
        torch.testing.assert_close(v, z @ w.T + y, atol=1e-12, rtol=0)


def test_the_summable_bound_binds(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a small ``D`` the bound ``D‖g₀‖(n + 1)^−(1+ε)`` refuses extrapolations that the monotone test
    alone would keep, and every extrapolation kept satisfies it."""
    op, y = _dense_problem(16, 6, seed=4, scale=1.0, dtype=torch.float64)
    scale, decay = 1e-3, 0.5
    kept_ok, binding = [], 0
    original = _AndersonIteration.step
    base = ForwardBackward(tol=1e-10, max_iter=3000)

    def recording(self, x, check):
        nonlocal binding
        candidate, kept_before = self.candidate.clone(), self.kept.clone()
        g_kept = None if self.g_kept is None else self.g_kept.clone()
        out = original(self, x, check)
        if g_kept is not None and candidate.any():
            gnorm = _fb_step_norm(op, y, x, self.alpha)
            bound = scale * self.g0 * (kept_before + 1) ** -(1 + decay)
            newly_kept = self.kept > kept_before
            kept_ok.append(bool((gnorm[newly_kept] <= bound[newly_kept] * (1 + 1e-9)).all()))
            binding += int((candidate & ~newly_kept & (gnorm <= g_kept) & (gnorm > bound)).sum())
        return out

    monkeypatch.setattr(_AndersonIteration, "step", recording)
    sol = mondeq.solve(op, ReLU(), y, Anderson(base, safeguard_scale=scale, safeguard_decay=decay))
    assert sol.stats.converged
    assert all(kept_ok) and len(kept_ok) > 0
    assert binding > 0  # the bound, not only the monotone test, refused some extrapolations
    with pytest.raises(mondeq.InputError):
        Anderson(base, safeguard_scale=0.0)


def test_the_least_squares_system_is_the_regularised_gram_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each extrapolation solves ``(G + λ·mean(diag G)·I) c = 𝟙`` per sample, ``G`` the Gram matrix of the kept
    residuals (λ large enough that a wrong shift shows)."""
    op, y = _dense_problem(12, 4, seed=5, scale=1.0, dtype=torch.float64)
    lam = 0.1
    systems, checked = [], 0
    real_solve, original = torch.linalg.solve_ex, _AndersonIteration.step

    def recording_solve(a, b):
        systems.append(a.clone())
        return real_solve(a, b)

    def recording(self, x, check):
        nonlocal checked
        before = len(systems)
        out = original(self, x, check)
        if len(systems) > before:
            k = min(self.count, self.cfg.memory)
            gs = self.gs[:, :k].to(torch.float64)
            gram = gs @ gs.transpose(1, 2)
            shift = lam * gram.diagonal(dim1=1, dim2=2).mean(dim=1)
            expected = gram + torch.diag_embed(shift[:, None].expand(-1, k))
            torch.testing.assert_close(systems[-1], expected, rtol=1e-10, atol=1e-300)
            checked += 1
        return out

    monkeypatch.setattr(torch.linalg, "solve_ex", recording_solve)
    monkeypatch.setattr(_AndersonIteration, "step", recording)
    sol = mondeq.solve(op, ReLU(), y, Anderson(ForwardBackward(tol=1e-9, max_iter=3000), regularization=lam))
    assert sol.stats.converged and checked > 3
    Anderson(ForwardBackward(), max_coefficient=0.5)  # any positive bound is valid
    with pytest.raises(mondeq.InputError, match="max_coefficient > 0"):
        Anderson(ForwardBackward(), max_coefficient=0.0)
