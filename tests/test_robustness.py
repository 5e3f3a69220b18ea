"""Certificates (SPEC 5): the ℓ2 Lipschitz bounds hold against empirical lower bounds, the norms they use
are exact, and certified accuracy behaves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import mondeq
from mondeq.cli import main
from mondeq.normalization import Normalization
from mondeq.robustness import certified_radii
from mondeq.training import certify_checkpoint

PIXELS = Normalization((0.0,), (1.0,))

SMALL = {
    "fc": dict(hidden=12),
    "conv": dict(channels=3, pool=2),
    "multitier": dict(channels=(2, 3)),
    "opteq-fc": dict(hidden=12, gamma=0.8),
    "opteq-conv": dict(channels=3, pool=2, gamma=0.8),
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    options = SMALL[name] if name.startswith("opteq") else {"m": 0.5, **SMALL[name]}
    model = mondeq.build_model(name, (1, 8, 8), 4, solver=mondeq.PeacemanRachford(tol=1e-12, max_iter=5000),
                               **options).double()
    with torch.no_grad():  # sharpen the weights so that the bound is tested away from zero
        for p in model.parameters():
            p.mul_(2.0)
    return model.eval()


@pytest.mark.parametrize("name", list(SMALL))
def test_lipschitz_bounds_hold(name: str) -> None:
    model = _model(name)
    lip, pairs, _ = model.lipschitz("2", PIXELS)
    gen = torch.Generator().manual_seed(1)
    x1 = torch.randn(64, 1, 8, 8, generator=gen, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(64, 1, 8, 8, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        dy = model(x1) - model(x2)
    dx = (x1 - x2).flatten(1).norm(dim=1)
    assert (dy.norm(dim=1) <= lip * dx * (1 + 1e-9)).all()
    diff = dy[:, :, None] - dy[:, None, :]
    assert (diff.abs() <= pairs[None] * dx[:, None, None] * (1 + 1e-9) + 1e-12).all()
    # local slopes (gradients of logit differences) are empirical lower bounds too
    x = x1[:8].clone().requires_grad_()
    y = model(x)
    for i, j in ((0, 1), (2, 3)):
        (g,) = torch.autograd.grad((y[:, i] - y[:, j]).sum(), x, retain_graph=True)
        assert (g.flatten(1).norm(dim=1) <= pairs[i, j] * (1 + 1e-9)).all()


@pytest.mark.parametrize("name", ["conv", "multitier"])
def test_input_norm_is_exact(name: str) -> None:
    model = _model(name)
    conv = model.mon.input_map if name == "conv" else model.mon.input_map.conv
    size = model.mon.operator.size
    n = conv.in_channels * size[0] * size[1]
    eye = torch.eye(n, dtype=torch.float64).view(n, conv.in_channels, *size)
    with torch.no_grad():
        dense = (conv(eye) - conv.bias.view(1, -1, 1, 1)).reshape(n, -1)
    assert float(model.input_norms(PIXELS)[0]) == pytest.approx(float(torch.linalg.matrix_norm(dense, 2)), rel=1e-9)


def test_certified_radii() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.5, 0.4]], dtype=torch.float64)
    pairs = torch.full((3, 3), 2.0, dtype=torch.float64).fill_diagonal_(0.0)
    torch.testing.assert_close(certified_radii(logits, pairs), torch.tensor([1.0, 0.05], dtype=torch.float64))


def test_certify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--train-subset", "256", "--test-subset", "128", "--no-progress",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["certify", "--checkpoint", str(out / "checkpoint.pt"), "--eps", "0", "--eps", "0.1",
                 "--eps", "1", "--test-subset", "128", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    acc = [row["certified_acc"] for row in r["results"]]
    assert r["norm"] == "2" and r["n"] == 128 and r["lipschitz"] > 0
    assert acc[0] == pytest.approx(r["clean_acc"]) and acc[0] >= acc[1] >= acc[2]
    assert main(["certify", "--checkpoint", str(out / "checkpoint.pt"), "--eps", "0.01", "--norm", "inf",
                 "--test-subset", "128", "--json"]) == 0
    r_inf = json.loads(capsys.readouterr().out)
    assert r["lipschitz"] <= r_inf["lipschitz"] <= 28 * r["lipschitz"] * (1 + 1e-12)  # ‖A‖₂ ≤ ‖A‖∞→2 ≤ √784‖A‖₂
    assert main(["certify", "--checkpoint", str(out / "checkpoint.pt"), "--eps", "-1"]) == 2
    assert main(["certify", "--checkpoint", str(out / "checkpoint.pt"), "--eps", "0.1", "--max-iter", "0"]) == 2
    assert main(["certify", "--checkpoint", str(out / "checkpoint.pt"), "--eps", "inf"]) == 2
    assert main(["certify", "--checkpoint", str(out / "checkpoint.pt"), "--eps", "0.1", "--attack", "pgd",
                 "--restarts", "0"]) == 2
    capsys.readouterr()
    # the same from Python, with a progress bar over the attacked batches (on stderr)
    r_py = certify_checkpoint(out / "checkpoint.pt", [0.1, 1.0], test_subset=128, attack=True, attack_steps=2,
                              progress=True)
    assert r_py["results"][0]["certified_acc"] == pytest.approx(r["results"][1]["certified_acc"])
    assert "certify" in capsys.readouterr().err
    # the attack never claims more than the certificate allows, nor more than the clean accuracy
    for norm, eps in (("2", ["0.5", "3"]), ("inf", ["0.02", "0.2"])):
        args = ["certify", "--checkpoint", str(out / "checkpoint.pt"), "--norm", norm, "--attack", "pgd",
                "--test-subset", "128", "--json"]
        assert main([*args, *[a for e in eps for a in ("--eps", e)]]) == 0
        rows = json.loads(capsys.readouterr().out)["results"]
        for row in rows:
            assert row["certified_acc"] <= row["pgd_acc"] <= r["clean_acc"] + 1e-12
        assert rows[1]["pgd_acc"] < rows[0]["pgd_acc"]


@pytest.mark.parametrize("m", [0.2, 1.0, 3.0])
def test_lipschitz_bound_is_attained_where_it_is_tight(m: float) -> None:
    """A model for which the bound is exact: ``A = B = 0`` (``W = (1 − m)I``), every unit active, and rank-one
    ``U = s·u vᵀ``, ``C = c uᵀ`` sharing ``u``. Then ``z* = (Ux + b)/m`` and the logits' Jacobian ``CU/m`` has
    norm ``‖C‖‖U‖/m`` exactly; so has each pair ``yᵢ − yⱼ``. The measured slope must equal the bound to the
    solver's accuracy: any missing or extra factor (``m``, a norm, ``√2``) shows."""
    torch.manual_seed(5)
    d, n = 64, 12
    model = mondeq.build_model("fc", (1, 8, 8), 4, hidden=n, m=m,
                               solver=mondeq.PeacemanRachford(tol=1e-13, max_iter=5000)).double().eval()
    u, v, c = (torch.randn(k, dtype=torch.float64) for k in (n, d, 4))
    with torch.no_grad():
        model.mon.operator.A.zero_()
        model.mon.operator.B.zero_()
        model.mon.input_map.weight.copy_(0.7 * torch.outer(u, v))
        model.mon.input_map.bias.copy_(10.0 * u.abs() + 10.0)  # z* > 0 near x = 0: every unit active
        model.head.weight.copy_(torch.outer(c, u))
    lip, pairs, _ = model.lipschitz("2", PIXELS)
    x = 1e-3 * torch.randn(1, 1, 8, 8, dtype=torch.float64)
    direction = (v / v.norm()).view(1, 1, 8, 8)
    h = 1e-4
    with torch.no_grad():
        assert (model.mon.input_map(x.flatten(1)) > 0).all()
        slope = (model(x + h * direction) - model(x - h * direction)) / (2 * h)
    assert float(slope.norm()) == pytest.approx(lip, rel=1e-7)
    for i, j in ((0, 1), (1, 3)):
        assert float((slope[0, i] - slope[0, j]).abs()) == pytest.approx(float(pairs[i, j]), rel=1e-7)


@pytest.fixture(scope="module")
def trained_fc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fully connected model trained briefly on mnist-mini (its checkpoint)."""
    from mondeq.training import TrainConfig, train

    out = tmp_path_factory.mktemp("fc")
    train(TrainConfig(epochs=4, train_subset=2000, test_subset=200, lr_step=None, seed=1, out=str(out)),
          progress=False, log=lambda s: None)
    return out / "checkpoint.pt"


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_no_attack_breaks_a_certified_point(norm: str, trained_fc: Path) -> None:
    """Point by point, at a radius where a good share of the test points is certified (not vacuous): a
    stronger PGD (50 steps, and again from a random point of the ball) never changes the prediction of a
    certified point, and does break some of the others (the attack is not vacuous either)."""
    from mondeq.robustness import certified_radius, pgd
    from mondeq.training import model_from_checkpoint

    model, splits, _ = model_from_checkpoint(trained_fc, eval_tol=1e-5)
    ok, radius, _ = certified_radius(model, splits.test_images, splits.test_labels, splits.normalization, norm)
    eps = float(radius[ok].median())
    certified = ok & (radius > eps)
    assert certified.double().mean() > 0.2
    adv = pgd(model, splits.normalization, splits.test_images, splits.test_labels, eps, norm, steps=50,
              restarts=2)
    with torch.no_grad():
        survived = model(splits.standardize(adv)).argmax(1) == splits.test_labels
    assert survived[certified].all()
    assert (~survived[ok & ~certified]).any()


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_random_starts_are_uniform_in_the_ball(norm: str) -> None:
    """PGD's restarts start from points drawn uniformly from the ball: in it, of the input's shape, and with
    the volume law of the ball, ``P(‖δ‖ ≤ rε) = rᵈ`` (ℓ2, d = 9) or ``P(|δᵢ| ≤ rε) = r`` (ℓ∞). 4000 draws
    estimate each fraction to a standard deviation below 0.008; the check allows 0.04."""
    from mondeq.robustness.attacks import _random_start

    x0 = torch.rand(4000, 1, 3, 3, dtype=torch.float64)
    eps = 0.5
    d = _random_start(x0, eps, norm, torch.Generator().manual_seed(0))
    assert d.shape == x0.shape and d.dtype == x0.dtype
    size = d.flatten(1).norm(dim=1) if norm == "2" else d.flatten().abs()
    assert float(size.max()) <= eps * (1 + 1e-12)
    for r in (0.5, 0.8, 0.9, 0.97):
        expected = r**9 if norm == "2" else r
        assert abs(float((size <= r * eps).double().mean()) - expected) < 0.04
    directions = d.flatten(1) / d.flatten(1).norm(dim=1, keepdim=True)
    assert float(directions.mean(0).norm()) < 0.05  # no preferred direction (≈ 0.016 for uniform ones)


@pytest.mark.parametrize("name", ["fc", "conv", "opteq-fc", "opteq-conv"])
def test_input_norms_compose_the_normalisation_per_channel(name: str) -> None:
    """On three channels with different std, ``‖UD⁻¹‖₂`` equals the norm of the materialised map from pixels to
    the equilibrium's input (not ``‖U‖/min std``), and the ℓ∞→ℓ2 bound lies between the largest ``‖UD⁻¹s‖₂``
    over sign vectors ``s`` found and ``√d‖UD⁻¹‖₂``; the model's ℓ∞ bounds hold for sign perturbations."""
    torch.manual_seed(2)
    shape = (3, 4, 4)
    options = {"fc": dict(hidden=7), "conv": dict(channels=2, pool=2), "opteq-fc": dict(hidden=7),
               "opteq-conv": dict(channels=2, pool=2)}[name]
    model = mondeq.build_model(name, shape, 4, solver=mondeq.PeacemanRachford(tol=1e-12, max_iter=5000),
                               **options).double().eval()
    normalization = Normalization((0.4, 0.5, 0.6), (0.1, 0.3, 0.9))
    d = math.prod(shape)
    pixels = torch.eye(d, dtype=torch.float64).view(d, *shape)
    flat = name.endswith("fc")

    def y(p: torch.Tensor) -> torch.Tensor:
        x = normalization(p)
        with torch.no_grad():
            return model.mon.input_map(x.flatten(1) if flat else x).flatten(1)

    a = (y(pixels) - y(torch.zeros_like(pixels[:1]))).T
    l2, inf_to_2 = (float(t) for t in model.input_norms(normalization))
    assert l2 == pytest.approx(float(torch.linalg.matrix_norm(a, 2)), rel=1e-9)
    gen = torch.Generator().manual_seed(3)
    signs = torch.randint(0, 2, (2000, d), generator=gen).double() * 2 - 1
    found = float((signs @ a.T).norm(dim=1).max())
    assert max(found, l2) <= inf_to_2 * (1 + 1e-12) and inf_to_2 <= math.sqrt(d) * l2 * (1 + 1e-12)
    bound = model.lipschitz("inf", normalization)
    x = torch.rand(64, *shape, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    delta = 0.05 * (torch.randint(0, 2, x.shape, generator=gen).double() * 2 - 1)
    with torch.no_grad():
        dy = model(normalization(x + delta)) - model(normalization(x))
    assert (dy.norm(dim=1) <= bound.logits * 0.05 * (1 + 1e-9)).all()
    diff = dy[:, :, None] - dy[:, None, :]
    assert (diff.abs() <= bound.pairs[None] * 0.05 * (1 + 1e-9) + 1e-12).all()


@pytest.mark.parametrize("name", ["fc", "conv"])
@pytest.mark.parametrize("norm", ["2", "inf"])
def test_differentiable_pair_bounds_are_the_bounds_and_reach_the_input_map(name: str, norm: str) -> None:
    """The Lipschitz-margin loss's pair bounds equal the certificate's and are differentiable in the head and
    the input map (gradcheck in float64)."""
    model = _model(name)
    normalization = Normalization((0.1,), (0.3,))
    exact = model.lipschitz(norm, normalization).pairs
    torch.testing.assert_close(model.lipschitz(norm, normalization, differentiable=True).pairs.detach(), exact,
                               rtol=1e-12, atol=0)
    params = (model.mon.input_map.weight, model.head.weight)  # perturbed in place by gradcheck
    assert torch.autograd.gradcheck(lambda *_: model.lipschitz(norm, normalization, differentiable=True).pairs,
                                    params, eps=1e-6, atol=1e-6)
    model.lipschitz(norm, normalization, differentiable=True).pairs.sum().backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in params)  # not a vacuous gradcheck


@pytest.mark.parametrize("name", sorted(mondeq.MODELS))
def test_every_registered_model_answers_the_certificate_protocol(name: str) -> None:
    """Every family's classifier gives finite positive bounds in both norms (ℓ∞ at least the ℓ2 one for the ℓ2
    families, by ‖A‖₂ ≤ ‖A‖∞→2) and says whether it has interval bounds."""
    from mondeq.robustness import Certifiable

    torch.manual_seed(0)
    small = {"channels": (2, 3)} if "multitier" in name else {"channels": 3} if "conv" in name else {"hidden": 6}
    if name == "opteq-deep-fc":
        small = {"hidden": (4, 4)}
    if name == "opteq-deep-conv":
        small = {"channels": (2, 2)}
    model = mondeq.build_model(name, (1, 8, 8), 4, **small)
    assert isinstance(model, Certifiable)
    l2, linf = (model.lipschitz(norm, Normalization((0.5,), (0.25,))) for norm in ("2", "inf"))
    for bound in (l2, linf):
        assert math.isfinite(bound.logits) and bound.logits > 0 and bound.state > 0
        assert bound.pairs.shape == (4, 4) and bool((bound.pairs.diagonal() == 0).all())
    assert linf.logits >= l2.logits * (1 - 1e-12)
    reason = model.interval_support()
    assert reason is None or "no interval bound" in reason
