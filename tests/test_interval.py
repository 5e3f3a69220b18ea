"""Interval bounds of NEMON models (SPEC 5): the mixed-monotone embedding keeps the ℓ∞ guarantee, its
enclosures hold the equilibria and logits of sampled and attacked points at every iterate, the training
bound is differentiable, and certified training makes interval certificates that no attack breaks."""

from __future__ import annotations

import pytest
import torch

import mondeq
from mondeq.operators.guarantees import LinfContractive
from mondeq.robustness import MixedMonotoneEmbedding, enclose

KINDS = {
    "nemon-fc": dict(hidden=16),
    "nemon-conv": dict(channels=3, pool=2),
}


def _model(name: str, scale: float, gamma: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    solver = mondeq.Average(tol=1e-13, max_iter=100000)
    model = mondeq.build_model(name, (1, 8, 8), 4, solver=solver, gamma=gamma, **KINDS[name]).double()
    with torch.no_grad():  # badly scaled: large T (negative diagonals, small α*) and spread weights Δ
        op = model.mon.operator
        first = op.T if hasattr(op, "T") else op.K
        first.mul_(scale)
        op.delta.copy_(torch.linspace(-1.5, 1.5, op.delta.numel()).double())
        model.mon.input_map.weight.mul_(3.0)
    return model.eval()


def _dense(op: torch.nn.Module) -> torch.Tensor:
    n = op.shape
    size = int(torch.tensor(n).prod())
    eye = torch.eye(size, dtype=torch.float64).view(size, *n)
    with torch.no_grad():
        return op.frozen().W(eye).reshape(size, size).T


def _box_samples(model: torch.nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> list[torch.Tensor]:
    """The box's corners, random points in it, and the points PGD finds on each logit difference over it."""
    gen = torch.Generator().manual_seed(2)
    samples = [lo, hi] + [lo + (hi - lo) * torch.rand(lo.shape, generator=gen, dtype=torch.float64)
                          for _ in range(20)]
    for k in range(4):
        x = (lo + hi) / 2
        for _ in range(15):
            x.requires_grad_(True)
            y = model(x)
            (g,) = torch.autograd.grad((y.sum(1) - 4 * y[:, k]).sum(), x)
            x = torch.minimum(torch.maximum(x.detach() + 0.1 * g.sign(), lo), hi)
        samples.append(x.detach())
    return samples


def _differences(model: torch.nn.Module, samples: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([y[:, :, None] - y[:, None, :] for y in map(model, samples)])


def _gap(diffs: torch.Tensor, margins: torch.Tensor) -> float:
    """The median distance of the margins below the sampled minima, relative to the sampled spread."""
    off = ~torch.eye(margins.shape[-1], dtype=torch.bool)
    gap = (diffs.amin(0) - margins)[:, off] / (diffs.amax(0) - diffs.amin(0))[:, off].clamp_min(1e-12)
    return float(gap.median())


@pytest.mark.parametrize("name", list(KINDS))
def test_embedding_is_the_split_of_W_and_keeps_its_measure(name: str) -> None:
    model = _model(name, 4.0, gamma=0.3)
    op = model.mon.operator
    w, we = _dense(op), _dense(MixedMonotoneEmbedding(op))
    n = w.shape[0]
    # in the stacked layout (all lower channels, then all upper ones) the blocks are P, N, N, P
    p, nn_ = w.clone(), torch.zeros_like(w)
    off = ~torch.eye(n, dtype=torch.bool)
    p[off & (w < 0)] = 0.0
    nn_[off & (w < 0)] = w[off & (w < 0)]
    torch.testing.assert_close(we, torch.cat([torch.cat([p, nn_], 1), torch.cat([nn_, p], 1)], 0), rtol=0, atol=0)
    g, ge = op.frozen().guarantee, MixedMonotoneEmbedding(op).frozen().guarantee
    assert isinstance(ge, LinfContractive)
    assert ge.mu == pytest.approx(g.mu, abs=1e-12) and ge.min_diagonal == pytest.approx(g.min_diagonal)
    assert g.mu <= 0.3 + 1e-9


@pytest.mark.parametrize("name", list(KINDS))
def test_the_solves_apply_the_embedding_by_centre_and_half_width(name: str) -> None:
    """The frozen ``W_e`` the training solves use (``Wc ∓ Ar`` from the box's centre and half-width) equals the
    stacked matrix the enclosure iterates, and so do its transpose and the parameter gradient of
    ``⟨u, W_e z⟩``. Each of the two computations of an entry is within ``(k + 8)u`` times ``|W|(|z̲| + |z̄|)``
    of the exact value (``k`` terms per dot product, a few scalings and sums; ``u`` the unit round-off), so
    twice that bounds their difference; a sign slip in ``A`` or in ``∓`` is off by whole entries of ``W``."""
    from mondeq.robustness import embed
    from mondeq.robustness.interval import _conv_W, _split_dense, _split_kernel

    model = _model(name, 4.0, gamma=0.3)
    op = model.mon.operator
    emb = MixedMonotoneEmbedding(op)
    stacked = embed(op)
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(5, *emb.shape, generator=gen, dtype=torch.float64) * torch.logspace(-3, 3, 5).view(
        -1, *[1] * len(emb.shape)).double()
    lo, hi = z.chunk(2, dim=1)
    both = torch.cat([lo.abs() + hi.abs()] * 2, 1)
    u = torch.finfo(torch.float64).eps / 2
    for apply, reference, magnitude in [(emb.frozen().W, stacked.op.W, stacked.absolute.W),
                                        (emb.frozen().WT, stacked.op.WT, stacked.absolute.WT)]:
        bound = 2 * (stacked.terms + 8) * u * magnitude(both)
        error = (apply(z) - reference(z)).abs()
        assert bool((error <= bound).all()) and float(bound.max()) < 1e-9 * float(reference(z).abs().max())
    tensors = emb.tensors()
    weights = torch.randn(z.shape, generator=gen, dtype=torch.float64)
    if hasattr(op, "T"):
        def by_stacked(t: tuple[torch.Tensor, ...]) -> torch.Tensor:
            return z @ _split_dense(op.weight(t)).T
    else:
        def by_stacked(t: tuple[torch.Tensor, ...]) -> torch.Tensor:
            kernel, delta = t
            shift = op.gamma - kernel.abs().sum(dim=(1, 2, 3))
            return _conv_W(_split_kernel(kernel), shift.repeat(2), torch.exp(delta).repeat(2).view(-1, 1, 1), z)
    leaves = [t.detach().requires_grad_(True) for t in tensors]
    expected = torch.autograd.grad(by_stacked(tuple(leaves)), leaves, weights)
    found = emb.vjp(tensors, z, weights, [True] * len(tensors))
    for g, e in zip(found, expected, strict=True):
        assert g is not None
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9 * float(e.abs().max()))


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("scale", [0.5, 6.0])
def test_enclosure_holds_sampled_and_attacked_equilibria(name: str, scale: float) -> None:
    model = _model(name, scale)
    gen = torch.Generator().manual_seed(1)
    centre = torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64)
    eps = 0.2
    lo, hi = centre - eps, centre + eps
    y_lo, y_hi = model.input_box(lo, hi)
    z_lo, z_hi, iters = enclose(model.mon.operator, model.mon.activation, y_lo, y_hi, tol=1e-12)
    assert iters > 1 and bool((z_lo <= z_hi).all())
    # early iterates are enclosures too (looser)
    e_lo, e_hi, _ = enclose(model.mon.operator, model.mon.activation, y_lo, y_hi, tol=1e-12, max_iter=3)
    assert bool((e_lo <= z_lo + 1e-12).all()) and bool((e_hi >= z_hi - 1e-12).all())
    # the budget is honoured exactly: as many iterations as it took end in the same box
    b_lo, b_hi, b_iters = enclose(model.mon.operator, model.mon.activation, y_lo, y_hi, tol=1e-12, max_iter=iters)
    assert b_iters == iters and torch.equal(b_lo, z_lo) and torch.equal(b_hi, z_hi)
    margins = model.interval(lo, hi)
    samples = _box_samples(model, lo, hi)
    with torch.no_grad():
        zs = torch.stack([model.mon(model._prepare(x)) for x in samples])
    diffs = _differences(model, samples)
    assert bool((zs >= z_lo).all()) and bool((zs <= z_hi).all())
    assert bool((diffs >= margins - 1e-12).all())
    # not vacuous: the equilibria found span a good part of the box, the margins come close to the samples'
    span = (zs.amax(0) - zs.amin(0)).sum() / (z_hi - z_lo).sum()
    assert float(span) > 0.15 and _gap(diffs, margins) < 6.0


@pytest.mark.parametrize(("name", "options", "shrink"), [("fc", dict(hidden=10, m=0.5), 0.15),
                                                         ("opteq-fc", dict(hidden=(6, 6), gamma=0.7), 1.0)])
def test_a_dense_l2_model_has_an_interval_bound_where_its_measure_allows(name: str, options: dict,
                                                                         shrink: float) -> None:
    """A dense monDEQ or OptEq offers the interval bound exactly when ``minΔ μ∞,Δ(W) < 1``: the Perron weights
    reach that minimum (below the identity's and random weights' measures), the enclosure then holds sampled
    and attacked logits and is not vacuous; a monDEQ with large weights is refused in one line."""
    from mondeq.operators.nemon import dense_guarantee
    from mondeq.robustness.interval import perron_weights

    torch.manual_seed(3)
    solver = mondeq.PeacemanRachford(tol=1e-13, max_iter=20000)
    model = mondeq.build_model(name, (1, 6, 6), 4, solver=solver, **options).double().eval()
    with torch.no_grad():
        for p in model.mon.operator.parameters():
            p.mul_(shrink)
    w = model._dense_w()
    root, weights = perron_weights(w)
    assert root < 1 and model.interval_support() is None
    def measure(d: torch.Tensor) -> float:  # max over rows of Wᵢᵢ + Σⱼ |Wᵢⱼ| dᵢ/dⱼ, from the dense matrix
        m = w * (d[:, None] / d[None, :])
        return float((m.diagonal() + (m - torch.diag(m.diagonal())).abs().sum(1)).max())

    assert measure(weights) == pytest.approx(root, abs=1e-9)
    assert dense_guarantee(w, weights).mu == pytest.approx(root, abs=1e-9)
    assert root <= measure(torch.ones_like(weights)) + 1e-12
    for _ in range(5):
        assert root <= measure(torch.rand(len(weights), dtype=torch.float64) + 0.1) + 1e-12
    gen = torch.Generator().manual_seed(4)
    centre = torch.randn(3, 1, 6, 6, generator=gen, dtype=torch.float64)
    lo, hi = centre - 0.2, centre + 0.2
    margins = model.interval(lo, hi)
    diffs = _differences(model, _box_samples(model, lo, hi))
    assert bool((diffs >= margins - 1e-12).all())
    assert _gap(diffs, margins) < 6.0
    if name != "fc":  # an OptEq's W = VᵀV is normalised: scaling its parameters leaves it as it is
        return
    with torch.no_grad():  # far from contractive in ℓ∞: refused, with the measure in the message
        for p in model.mon.operator.parameters():
            p.mul_(20.0)
    reason = model.interval_support()
    assert reason is not None and "≥ 1" in reason
    with pytest.raises(mondeq.InputError, match="no interval bound"):
        model.interval(lo, hi)


def test_a_convolutional_monotone_model_offers_no_interval_bound() -> None:
    model = mondeq.build_model("conv", (1, 8, 8), 4, channels=3)
    assert "no interval bound" in (model.interval_support() or "")
    with pytest.raises(mondeq.InputError, match="interval"):
        model.interval(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))


@pytest.mark.parametrize("name", list(KINDS))
def test_the_training_bound_is_the_sound_one_and_differentiable(name: str) -> None:
    model = _model(name, 2.0).train()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 3])
    lo, hi = x - 0.1, x + 0.1
    worst = model.interval_training(lo, hi, labels)
    sound = -model.eval().interval(lo, hi)[torch.arange(2), labels]
    torch.testing.assert_close(worst.detach(), sound, atol=1e-6, rtol=1e-6)
    model.train()
    params = (model.mon.operator.delta, model.mon.input_map.bias)  # perturbed in place by gradcheck
    assert torch.autograd.gradcheck(lambda *_: model.interval_training(lo, hi, labels), params, eps=1e-6,
                                    atol=1e-5)


def test_a_measure_below_one_by_less_than_its_rounding_is_refused() -> None:
    """``W = ¼(1 − 10⁻¹⁵)𝟙𝟙ᵀ`` has Perron root just below 1; the stored embedding's measure with rounding is not,
    so no enclosure is claimed, and the message says why."""
    from mondeq.robustness.interval import embed_dense, perron_weights

    w = torch.full((4, 4), 0.25 * (1 - 1e-15), dtype=torch.float64)
    assert perron_weights(w)[0] < 1
    with pytest.raises(mondeq.InputError, match="rounding"):
        embed_dense(w)
