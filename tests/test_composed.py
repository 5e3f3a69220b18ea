"""Certificates of classifiers composed from parts with known norms (``mondeq.models.compose``): each part's
bound against its dense matrix, the composition against our own models' (independently tested) bounds, and
the bounds of a CNN-fronted equilibrium against empirical lower bounds and sampled points."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import mondeq
from mondeq.errors import InputError
from mondeq.models import ConvMonDEQ, FCMonDEQ, NemonConv, NemonFC
from mondeq.models.composed import ComposedL2, ComposedNemon, compose
from mondeq.models.parts import affine_inf_to_2, affine_l2, affine_rows, lipschitz_constant, part_box
from mondeq.normalization import Normalization
from mondeq.robustness import CertifiedLoss, certify
from mondeq.robustness.interval import abs_linear, readout_box

NORM1 = Normalization((0.13,), (0.31,))
NORM2 = Normalization((0.4, 0.5), (0.2, 0.7))
REL = 1e-10  # float64 round-off of the bounds, far below every margin below


def _dense(part: nn.Module, scale: torch.Tensor) -> torch.Tensor:
    """The matrix of ``x ↦ A(s ⊙ x)`` (bias removed), inputs of ``scale``'s shape, as (outputs, inputs)."""
    n = scale.numel()
    eye = torch.eye(n, dtype=torch.float64).view(n, *scale.shape) * scale
    with torch.no_grad():
        return (part(eye) - part(torch.zeros_like(eye[:1]))).reshape(n, -1).T


def _scale(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    per_channel = 0.5 + torch.rand(shape[0], generator=gen, dtype=torch.float64)
    return per_channel.view(-1, *[1] * (len(shape) - 1)).expand(shape).clone()


AFFINE_PARTS = {
    "linear": (lambda: nn.Linear(12, 5), (12,)),
    "conv-zero-pad": (lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 6, 5)),
    "conv-stride-2": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 7, 7)),
    "conv-no-pad": (lambda: nn.Conv2d(2, 3, 3), (2, 6, 6)),
    "conv-after-zeropad": (lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 7, 6)),  # its input border is not perturbed
    "conv-circular": (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), (2, 5, 5)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(2), (2, 4, 4)),
}


@pytest.mark.parametrize("name", list(AFFINE_PARTS))
def test_affine_part_norms_bound_their_dense_matrix(name: str) -> None:
    torch.manual_seed(0)
    make, shape = AFFINE_PARTS[name]
    part = make().double().eval().requires_grad_(False)
    if isinstance(part, nn.BatchNorm2d):
        with torch.no_grad():
            part.running_var.uniform_(0.2, 3.0)
            part.running_mean.normal_()
            part.weight.normal_()
    gen = torch.Generator().manual_seed(1)
    scale = _scale(shape, gen)
    if name == "conv-after-zeropad":
        scale[:, [0, -1], :] = 0
        scale[:, :, [0, -1]] = 0
    a = _dense(part, scale)
    exact2 = float(torch.linalg.matrix_norm(a, 2))
    exact_inf = float(a.abs().sum(1).max())
    l2 = float(affine_l2(part, scale, shape))
    assert exact2 <= l2 * (1 + REL)
    assert exact_inf <= float(affine_rows(part, scale).max()) * (1 + REL)
    if name in ("linear", "conv-circular", "batchnorm2d"):  # exact there
        assert l2 == pytest.approx(exact2, rel=1e-9)
    if name in ("linear", "conv-zero-pad", "conv-after-zeropad", "batchnorm2d"):  # interior rows hold every tap
        assert float(affine_rows(part, scale).max()) == pytest.approx(exact_inf, rel=1e-9)
    # ‖A‖∞→2 = max over sign vectors of ‖Av‖₂ (attained at a vertex): every sampled vertex is below the bound,
    # and the bound is min(√d‖A‖₂, ‖|A|s‖₂) of the dense matrix
    signs = torch.randint(0, 2, (2000, a.shape[1]), generator=gen).double() * 2 - 1
    inf_to_2 = float(affine_inf_to_2(part, scale, shape))
    assert float((signs @ a.T).norm(dim=1).max()) <= inf_to_2 * (1 + REL)
    ones, d = float(a.abs().sum(1).norm()), int((scale > 0).sum())  # d: the perturbed inputs
    assert inf_to_2 <= min(math.sqrt(d) * l2, ones) * (1 + REL)
    assert inf_to_2 >= min(math.sqrt(d) * exact2, ones) * (1 - REL)


def test_zero_padded_conv_bound_holds_where_the_unpadded_grid_would_not() -> None:
    # on a grid barely larger than the kernel the wrapped (unpadded) circulant misses the zero-padded map's
    # norm by up to ~25% for some kernels; the bound on the padded grid holds for every one of them
    torch.manual_seed(7)
    scale = torch.ones(1, 3, 3, dtype=torch.float64)
    ratios = []
    for _ in range(100):
        conv = nn.Conv2d(1, 1, 3, padding=1).double().requires_grad_(False)
        exact = float(torch.linalg.matrix_norm(_dense(conv, scale), 2))
        ratios.append(float(affine_l2(conv, scale, (1, 3, 3))) / exact)
    assert min(ratios) >= 1 - REL


@pytest.mark.parametrize(("pool", "shape"), [(nn.AvgPool2d(2), (1, 6, 6)), (nn.AvgPool2d(3, stride=2), (1, 7, 7)),
                                             (nn.MaxPool2d(2), (2, 4, 4)), (nn.MaxPool2d(3, stride=1), (1, 5, 5))])
def test_pooling_constants_bound_the_pool(pool: nn.Module, shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(3)
    if isinstance(pool, nn.AvgPool2d):  # linear: the dense norm, exact at stride = kernel
        a = _dense(pool, torch.ones(shape, dtype=torch.float64))
        exact = float(torch.linalg.matrix_norm(a, 2))
        assert exact <= lipschitz_constant(pool, "2") * (1 + REL)
        if pool.stride == pool.kernel_size:
            assert lipschitz_constant(pool, "2") == pytest.approx(exact, rel=1e-12)
        assert float(a.abs().sum(1).max()) == pytest.approx(lipschitz_constant(pool, "inf"))
        return
    x1 = torch.randn(500, *shape, generator=gen, dtype=torch.float64)
    x2 = x1 + torch.randn(500, *shape, generator=gen, dtype=torch.float64)
    ratio = (pool(x1) - pool(x2)).flatten(1).norm(dim=1) / (x1 - x2).flatten(1).norm(dim=1)
    assert float(ratio.max()) <= lipschitz_constant(pool, "2")
    # a spike at an input inside every window moves each window's maximum by the spike: √c is attained
    x = torch.zeros(1, *shape, dtype=torch.float64)
    x[0, 0, 2, 2] = 1.0
    attained = float(pool(x).norm()) / float(x.norm())
    k, s = pool.kernel_size, pool.stride
    assert attained == pytest.approx(math.ceil(k / s), rel=1e-12) == lipschitz_constant(pool, "2")


@pytest.mark.parametrize(("part", "slope"), [(nn.ReLU(), 1.0), (nn.LeakyReLU(0.3), 1.0), (nn.Tanh(), 1.0),
                                            (nn.Sigmoid(), 0.25), (nn.AvgPool2d(2), 1.0)])
def test_elementwise_constants_are_the_largest_slope_and_boxes_enclose(part: nn.Module, slope: float) -> None:
    # the ℓ∞ constant is the largest slope, attained near 0 (the finite difference there is within h² of it)
    h = 1e-5
    shift = h if isinstance(part, (nn.ReLU, nn.LeakyReLU)) else 0.0  # their slope 1 is on the positive side
    x = torch.full((1, 1, 2, 2), shift - h / 2, dtype=torch.float64)
    found = float((part(x + h) - part(x)).abs().max()) / h
    assert found == pytest.approx(lipschitz_constant(part, "inf"), rel=1e-6) == pytest.approx(slope)
    gen = torch.Generator().manual_seed(8)
    lo = 3 * torch.randn(4, 1, 4, 4, generator=gen, dtype=torch.float64)
    hi = lo + torch.rand(lo.shape, generator=gen, dtype=torch.float64)
    b_lo, b_hi = part_box(part, lo, hi)
    for _ in range(20):
        y = part(lo + (hi - lo) * torch.rand(lo.shape, generator=gen, dtype=torch.float64))
        assert bool((b_lo <= y).all() and (y <= b_hi).all())
    b_lo, b_hi = part_box(part, lo, lo)  # a point box: its image, widened by rounding alone (relative to
    scale = part(lo.abs())  # the magnitudes summed, for the pool)
    assert bool(((part(lo) - b_lo) <= 1e-14 * scale).all() and ((b_hi - part(lo)) <= 1e-14 * scale).all())
    assert bool((b_lo <= part(lo)).all() and (part(lo) <= b_hi).all())


@pytest.mark.parametrize("part", [nn.Tanh(), nn.Sigmoid(), nn.AvgPool2d(2), nn.AvgPool2d(3, stride=1)],
                         ids=["tanh", "sigmoid", "avgpool2", "avgpool3"])
def test_float32_boxes_contain_the_exact_image(part: nn.Module) -> None:
    """A box computed in float32 encloses the exact (float64) image of its float32 end points: the part's
    rounding is covered by the widening (a few units of the last place for the elementwise functions, one
    per added term for the average pool). A point box is the sharpest test: without the widening it has
    zero width, and the exact image misses it wherever float32 rounded."""
    gen = torch.Generator().manual_seed(9)
    x = (4 * torch.randn(16, 3, 12, 12, generator=gen)).float()
    b_lo, b_hi = part_box(part, x, x)
    exact = part(x.double())
    assert bool((b_lo.double() <= exact).all() and (exact <= b_hi.double()).all())
    assert bool((part(x).double() != exact).any())  # float32 did round: the check is not vacuous


def test_interval_maps_exist_only_for_zero_padded_stride_one_layers() -> None:
    """``abs_linear``'s ``|A|`` convolution is zero-padded with stride 1: other convolutions are refused."""
    assert abs_linear(nn.Conv2d(2, 3, 3, padding=1))[2] == 2 * 9 + 1
    for conv in (nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), nn.Conv2d(2, 3, 3, stride=2),
                 nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", stride=2)):
        with pytest.raises(InputError, match="no interval map"):
            abs_linear(conv)


def test_float32_readout_boxes_contain_the_exact_readout() -> None:
    """The NEMON readout's widening (:func:`readout_box`) covers its float32 rounding relative to the
    magnitudes summed: mixed-sign states (tanh equilibria) make the pooled sums cancel, where a slack
    relative to the result would be too small. A point box, so only the widening can contain the exact
    float64 readout."""
    model = NemonConv((1, 12, 12), 10, channels=3, pool=3)
    gen = torch.Generator().manual_seed(4)
    z = (4 * torch.randn(32, 3, 12, 12, generator=gen)).float()
    f_lo, f_hi = readout_box(model.readout, model.readout_terms, z, z)
    exact = model.readout(z.double())
    assert bool((f_lo.double() <= exact).all() and (exact <= f_hi.double()).all())
    assert bool((model.readout(z).double() != exact).any())  # float32 did round: the check is not vacuous


def _twins() -> list[tuple[str, nn.Module, nn.Module, Normalization]]:
    """Our models and the same parameters composed from parts."""
    torch.manual_seed(0)
    fc, nf = FCMonDEQ((1, 8, 8), 10, hidden=12), NemonFC((1, 8, 8), 10, hidden=12, gamma=0.2)
    nc, cm = NemonConv((1, 8, 8), 10, channels=4, pool=2), ConvMonDEQ((1, 8, 8), 10, channels=4, pool=2)
    for model in (nf, nc):
        with torch.no_grad():
            model.mon.operator.delta.normal_()
    pool = [nn.AvgPool2d(2), nn.Flatten()]
    return [("fc", fc, compose((1, 8, 8), [nn.Flatten()], fc.mon, fc.head), NORM1),
            ("nemon-fc", nf, compose((1, 8, 8), [nn.Flatten()], nf.mon, nf.head), NORM1),
            ("nemon-conv", nc, compose((1, 8, 8), [], nc.mon, nc.head, pool), NORM1),
            ("conv", cm, compose((1, 8, 8), [nn.ZeroPad2d(1)], cm.mon, cm.head, pool), NORM1)]


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("norm", ["2", "inf"])
def test_composed_bounds_are_those_of_our_models(index: int, norm: str) -> None:
    name, ours, composed, normalization = _twins()[index]
    assert isinstance(composed, ComposedNemon if name.startswith("nemon") else ComposedL2)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(composed(x), ours(x), rtol=0, atol=0)
    a, b = ours.lipschitz(norm, normalization), composed.lipschitz(norm, normalization)
    assert b.logits == pytest.approx(a.logits, rel=1e-12) and b.state == pytest.approx(a.state, rel=1e-12)
    torch.testing.assert_close(b.pairs, a.pairs, rtol=1e-12, atol=0)
    if ours.interval_support() is None:
        lo, hi = normalization.box(x.double(), 0.02)
        t1, t2 = copy.deepcopy(ours).double().eval(), copy.deepcopy(composed).double().eval()
        torch.testing.assert_close(t2.interval(lo, hi), t1.interval(lo, hi), rtol=1e-12, atol=1e-12)


def _cnn(family: str, channels: int = 2) -> nn.Module:
    """A CNN front end (conv, batch norm, ReLU, pooling) on an equilibrium layer, in float64 and eval mode."""
    torch.manual_seed(1)
    features = [nn.Conv2d(channels, 3, 3, stride=2, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten()]
    if family == "nemon":
        layer = mondeq.EquilibriumLayer(nn.Linear(12, 10), mondeq.DenseNemon(10, 0.3),
                                        solver=mondeq.Average(tol=1e-13, max_iter=20000))
    else:
        layer = mondeq.EquilibriumLayer(nn.Linear(12, 10), mondeq.DenseMonotone(10, m=0.5),
                                        solver=mondeq.PeacemanRachford(tol=1e-13, max_iter=20000))
    model = compose((channels, 8, 8), features, layer, nn.Linear(10, 4)).double()
    with torch.no_grad():
        bn = model.features[1]
        bn.running_var.uniform_(0.3, 2.0)
        bn.running_mean.normal_(0, 0.3)
        bn.weight.normal_()
        for p in model.parameters():
            p.mul_(2.0)  # away from the initial scale, so the bounds are tested where they are not tiny
        if family == "nemon":
            model.mon.operator.delta.normal_()
    return model.eval()


def _ascent(model: nn.Module, normalization: Normalization, norm: str, i: int, j: int) -> float:
    """The largest ``|Δ(yᵢ − yⱼ)|/‖Δx‖`` (pixel scale) found by gradient ascent from several starts."""
    gen = torch.Generator().manual_seed(4)
    best = 0.0
    for _ in range(4):
        x1 = torch.rand(8, 2, 8, 8, generator=gen, dtype=torch.float64)
        d = 1e-2 * torch.randn(8, 2, 8, 8, generator=gen, dtype=torch.float64)
        for _ in range(30):
            d.requires_grad_(True)
            y1, y2 = model(normalization(x1)), model(normalization(x1 + d))
            size = d.flatten(1).norm(dim=1) if norm == "2" else d.flatten(1).abs().amax(1)
            ratio = ((y1[:, i] - y1[:, j]) - (y2[:, i] - y2[:, j])).abs() / size
            (g,) = torch.autograd.grad(ratio.sum(), d)
            best = max(best, float(ratio.detach().max()))
            step = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1).clamp_min(1e-30) if norm == "2" else g.sign()
            d = (d.detach() + 3e-3 * step).detach()
    return best


@pytest.mark.parametrize("family", ["monotone", "nemon"])
@pytest.mark.parametrize("norm", ["2", "inf"])
def test_composed_cnn_bounds_exceed_the_empirical_ones(family: str, norm: str) -> None:
    model = _cnn(family)
    bound = model.lipschitz(norm, NORM2)
    for i, j in ((0, 1), (2, 3)):
        found = _ascent(model, NORM2, norm, i, j)
        assert 0 < found <= float(bound.pairs[i, j]) * (1 + REL)
    # the normalisation is folded per channel: dividing by the smallest std alone gives a larger bound
    single = Normalization((0.0, 0.0), (0.2, 0.2))
    assert model.lipschitz(norm, single).logits > bound.logits * (1 + 1e-3)


@pytest.mark.parametrize("family", ["monotone", "nemon"])
def test_composed_cnn_interval_encloses_sampled_logits(family: str) -> None:
    model = _cnn(family)
    if family == "monotone":
        with torch.no_grad():  # a dense W whose ℓ∞ measure allows the embedding
            for t in model.mon.operator.tensors()[:2]:  # A and B: W → (1 − m)I
                t.mul_(0.05)
        assert model.interval_support() is None
    gen = torch.Generator().manual_seed(5)
    pixels = torch.rand(3, 2, 8, 8, generator=gen, dtype=torch.float64)
    lo, hi = NORM2.box(pixels, 0.05)
    margins = model.interval(lo, hi)
    samples = [lo, hi] + [lo + (hi - lo) * torch.rand(lo.shape, generator=gen, dtype=torch.float64)
                          for _ in range(30)]
    with torch.no_grad():
        diffs = torch.stack([y[:, :, None] - y[:, None, :] for y in map(model, samples)])
    assert bool((diffs >= margins - 1e-12).all())
    # not vacuous: as the box shrinks to a point, the bounds close on that point's logit differences at the
    # rate of the box (interval arithmetic is exact on a point; the constant is the interval's growth rate)
    with torch.no_grad():
        y = model(NORM2(pixels))
    for eps in (1e-4, 1e-6):
        gap = y[:, :, None] - y[:, None, :] - model.interval(*NORM2.box(pixels, eps))
        assert float(gap.min()) >= -1e-9 and float(gap.max()) <= 1e5 * eps


def test_parts_without_a_known_norm_are_refused() -> None:
    layer = mondeq.EquilibriumLayer(nn.Linear(64, 6), mondeq.DenseNemon(6))
    for bad in (nn.Dropout(0.1), nn.Conv2d(1, 1, 3, dilation=2), nn.AvgPool2d(2, padding=1), nn.LeakyReLU(2.0),
                nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")):
        with pytest.raises(InputError, match="no known norm"):
            compose((1, 8, 8), [bad, nn.Flatten()], layer, nn.Linear(6, 3))
    with pytest.raises(InputError, match="readout"):
        compose((1, 8, 8), [nn.Flatten()], layer, nn.Linear(6, 3), [nn.ReLU()])
    model = _cnn("monotone")
    model.train()
    with pytest.raises(InputError, match="training mode"):
        model.lipschitz("2", NORM2)
    with pytest.raises(InputError, match="interval bounds"):
        CertifiedLoss("inf", 0.1, NORM2).check(model)


def test_a_composed_nemon_trains_certified_and_certifies() -> None:
    torch.manual_seed(2)
    features = [nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten()]
    layer = mondeq.EquilibriumLayer(nn.Linear(64, 16), mondeq.DenseNemon(16), solver=mondeq.Average(tol=1e-4),
                                    eval_solver=mondeq.Average(tol=1e-6, max_iter=5000))
    model = compose((1, 8, 8), features, layer, nn.Linear(16, 2))
    gen = torch.Generator().manual_seed(6)
    labels = torch.randint(0, 2, (64,), generator=gen)
    pixels = (0.3 + 0.4 * labels.view(-1, 1, 1, 1) + 0.1 * torch.randn(64, 1, 8, 8, generator=gen)).clamp(0, 1)
    loss_fn = CertifiedLoss("inf", 0.05, NORM1, warmup=0.0, ramp=0.0, mix=0.5)
    loss_fn.check(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        x = NORM1(pixels)
        loss = loss_fn(model, x, labels, model(x), 1.0)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and bool(p.grad.isfinite().all()) for p in model.features.parameters())
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    result = certify(model, pixels, labels, NORM1, eps=[0.02, 0.05], norm="inf", attack=True)
    assert result["clean_acc"] > 0.9 and result["results"][0]["certified_acc"] > 0.5  # not vacuous


def test_certified_training_bounds_the_batch_norms_evaluation_map() -> None:
    # in training mode the loss's interval bound is that of the evaluation map (running statistics, untouched);
    # a certificate in training mode is refused
    model = _cnn("nemon")
    gen = torch.Generator().manual_seed(9)
    pixels = torch.rand(3, 2, 8, 8, generator=gen, dtype=torch.float64)
    lo, hi = NORM2.box(pixels, 0.02)
    labels = torch.tensor([0, 1, 3])
    evaluated = -model.interval(lo, hi)[torch.arange(3), labels]  # bounds of yₖ − y_label
    bn = model.features[1]
    stats = bn.running_mean.clone(), bn.running_var.clone()
    model.train()
    trained = model.interval_training(lo, hi, labels)
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    off = torch.ones_like(trained, dtype=torch.bool)
    off[torch.arange(3), labels] = False
    assert bool((trained[off] <= evaluated[off] + 1e-9).all())  # the training bound is tighter or equal
    torch.testing.assert_close(trained[off], evaluated[off], rtol=1e-6, atol=1e-9)  # and the same map's
    with pytest.raises(InputError, match="training mode"):
        model.lipschitz("inf", NORM2)
    with pytest.raises(InputError, match="training mode"):
        model.interval(lo, hi)
