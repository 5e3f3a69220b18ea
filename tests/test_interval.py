"""Interval bounds of NEMON models (SPEC 5): the mixed-monotone embedding keeps the ℓ∞ guarantee, its
enclosures hold the equilibria and logits of sampled and attacked points at every iterate, the training
bound is differentiable, and certified training makes interval certificates that no attack breaks."""

from __future__ import annotations

import pytest
import torch

import mondeq
from mondeq.operators.guarantees import LinfContractive
from mondeq.robustness import MixedMonotoneEmbedding, enclose, interval_margins
from mondeq.robustness.interval import ibp_worst_logits

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
    margins = interval_margins(model, lo, hi)
    samples = [lo, hi] + [lo + (hi - lo) * torch.rand(lo.shape, generator=gen, dtype=torch.float64)
                          for _ in range(20)]
    # the points an attack finds: PGD on each logit difference over the box
    for k in range(4):
        x = centre.clone()
        for _ in range(15):
            x.requires_grad_(True)
            y = model(x)
            (g,) = torch.autograd.grad((y.sum(1) - 4 * y[:, k]).sum(), x)
            x = torch.minimum(torch.maximum(x.detach() + 0.1 * g.sign(), lo), hi)
        samples.append(x.detach())
    zs, diffs = [], []
    for x in samples:
        with torch.no_grad():
            zs.append(model.mon(model._prepare(x)))
            y = model(x)
        diffs.append(y[:, :, None] - y[:, None, :])
    zs, diffs = torch.stack(zs), torch.stack(diffs)
    assert bool((zs >= z_lo).all()) and bool((zs <= z_hi).all())
    assert bool((diffs >= margins - 1e-12).all())
    # not vacuous: the equilibria found span a good part of the box, the margins come close to the samples'
    span = (zs.amax(0) - zs.amin(0)).sum() / (z_hi - z_lo).sum()
    off = ~torch.eye(4, dtype=torch.bool)
    gap = (diffs.amin(0) - margins)[:, off] / (diffs.amax(0) - diffs.amin(0))[:, off].clamp_min(1e-12)
    assert float(span) > 0.15 and float(gap.median()) < 6.0


def test_an_enclosure_is_refused_for_a_monotone_model() -> None:
    model = mondeq.build_model("fc", (1, 8, 8), 4, hidden=8)
    with pytest.raises(mondeq.InputError, match="interval"):
        interval_margins(model, torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))


@pytest.mark.parametrize("name", list(KINDS))
def test_the_training_bound_is_the_sound_one_and_differentiable(name: str) -> None:
    model = _model(name, 2.0).train()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 3])
    lo, hi = x - 0.1, x + 0.1
    worst = ibp_worst_logits(model, lo, hi, labels)
    sound = -interval_margins(model.eval(), lo, hi)[torch.arange(2), labels]
    torch.testing.assert_close(worst.detach(), sound, atol=1e-6, rtol=1e-6)
    model.train()
    params = (model.mon.operator.delta, model.mon.input_map.bias)  # perturbed in place by gradcheck
    assert torch.autograd.gradcheck(lambda *_: ibp_worst_logits(model, lo, hi, labels), params, eps=1e-6,
                                    atol=1e-5)
