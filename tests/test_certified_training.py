"""Certified training, attacks and the certify loop (SPEC 5): the interval-bound loss makes interval
certificates that no attack breaks, the schedules are what they say, attacks with restarts are stronger,
warm starts shorten the solves, and a contradicted certificate is an error, not a statistic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mondeq
from mondeq.cli import main
from mondeq.errors import CertificateError
from mondeq.normalization import Normalization
from mondeq.robustness import CertifiedLoss, certify, pgd, warm_started
from mondeq.training import TrainConfig

SMALL = ["--train-subset", "3000", "--test-subset", "300", "--hidden", "40", "--batch-size", "100",
         "--no-progress"]


@pytest.fixture(scope="module")
def nemon_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = {}
    for name, extra in (("plain", []), ("ibp", ["--certified-train", "inf", "--train-eps", "0.1",
                                                "--eps-warmup", "1", "--eps-ramp", "2"])):
        out = tmp_path_factory.mktemp(name)
        assert main(["train", "--model", "nemon-fc", "--epochs", "4", *SMALL, *extra, "--out", str(out)]) == 0
        runs[name] = out / "checkpoint.pt"
    return runs


def _certify(path: Path, norm: str, eps: list[str], capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    capsys.readouterr()
    assert main(["certify", "--checkpoint", str(path), "--norm", norm, "--test-subset", "300", "--tol", "1e-5",
                 "--json", *[a for e in eps for a in ("--eps", e)], *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_interval_training_certifies_and_no_attack_breaks_it(nemon_runs: dict[str, Path],
                                                               capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path) -> None:
    args = ("--attack", "pgd", "--restarts", "2", "--attack-steps", "30", "--plot", str(tmp_path / "c.png"))
    ibp = _certify(nemon_runs["ibp"], "inf", ["0.05", "0.1"], capsys, *args)
    plain = _certify(nemon_runs["plain"], "inf", ["0.05", "0.1"], capsys, *args)
    assert (tmp_path / "c.png").stat().st_size > 0
    for r in (ibp, plain):
        for row in r["results"]:  # certify raises if an attack breaks a certified point
            assert row["certified_acc"] <= row["pgd_acc"] <= r["clean_acc"]
            assert row["certified_acc"] == pytest.approx(max(row["certified_acc"], row["interval_certified_acc"]))
    # interval bounds certify far more than the global Lipschitz bound, and certified training far more again
    at = {r["eps"]: r for r in ibp["results"]}
    assert at[0.05]["interval_certified_acc"] > 0.25 > at[0.05]["lipschitz_certified_acc"]
    assert at[0.05]["interval_certified_acc"] > plain["results"][0]["interval_certified_acc"] + 0.2
    assert at[0.1]["interval_certified_acc"] > plain["results"][1]["interval_certified_acc"]
    # an ℓ∞ radius is an ℓ2 one, and the ℓ2 ball lies in the ℓ∞ box: NEMON certifies ℓ2 balls by both
    l2 = _certify(nemon_runs["ibp"], "2", ["0.05"], capsys)["results"][0]
    assert l2["lipschitz_certified_acc"] == at[0.05]["lipschitz_certified_acc"]
    assert l2["interval_certified_acc"] == at[0.05]["interval_certified_acc"]


def test_the_interval_solves_are_counted_apart_from_the_clean_ones(nemon_runs: dict[str, Path]) -> None:
    """Each epoch's metrics count the embedded equilibria of the interval bound on their own, from the first
    epoch with ε > 0 (none during the clean warm-up, none in plain training)."""
    rows = [json.loads(line) for line in (nemon_runs["ibp"].parent / "metrics.jsonl").read_text().splitlines()]
    assert "interval_fwd_iters" not in rows[0]  # the clean warm-up epoch
    for r in rows[1:]:
        assert r["interval_fwd_iters"] >= 2 and r["interval_bwd_iters"] >= 2 and r["fwd_iters"] >= 2
    plain = (nemon_runs["plain"].parent / "metrics.jsonl").read_text()
    assert "interval_fwd_iters" not in plain


def test_a_contradicted_certificate_is_an_error(nemon_runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from mondeq.training import model_from_checkpoint

    certify_module = importlib.import_module("mondeq.robustness.certify")
    model, splits, _ = model_from_checkpoint(nemon_runs["plain"], test_subset=100, eval_tol=1e-6)
    real = certify_module.certified_radius

    def inflated(*args, **kwargs):  # a wrong certificate: every correct point "certified" at any radius
        ok, radius, lip = real(*args, **kwargs)
        return ok, torch.full_like(radius, float("inf")), lip

    monkeypatch.setattr(certify_module, "certified_radius", inflated)
    with pytest.raises(CertificateError, match="unsound"):
        certify(model, splits.test_images, splits.test_labels, splits.normalization, [0.3], "inf", attack=True)


def test_restarts_only_lower_the_attacked_accuracy_and_warm_starts_shorten_solves(
    nemon_runs: dict[str, Path],
) -> None:
    from mondeq.training import model_from_checkpoint

    model, splits, _ = model_from_checkpoint(nemon_runs["plain"], test_subset=200, eval_tol=1e-6)
    images, labels = splits.test_images, splits.test_labels

    def accuracy(adv: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(splits.standardize(adv)).argmax(1) == labels).double().mean())

    one = accuracy(pgd(model, splits.normalization, images, labels, 0.1, "inf", steps=10, restarts=1))
    three = accuracy(pgd(model, splits.normalization, images, labels, 0.1, "inf", steps=10, restarts=3))
    assert three <= one < 0.9
    x = splits.normalize(images)
    with torch.no_grad():
        model(x)
        cold = model.mon.last_solve.forward.iterations
        with warm_started(model):
            model(x)
            model(x)  # from the previous equilibrium: stops at its first check
            warm = model.mon.last_solve.forward.iterations
        assert model.mon._last is None and not model.mon.warm_start  # restored on leaving
    assert warm < cold / 3


def test_the_schedule_ramps_eps_and_the_clean_weight() -> None:
    loss = CertifiedLoss("inf", 0.2, Normalization((0.0,), (1.0,)), warmup=1.0, ramp=4.0, mix=0.4)
    assert loss.schedule(0.5) == (0.0, 1.0)
    assert loss.schedule(3.0) == pytest.approx((0.1, 0.7))
    assert loss.schedule(9.0) == pytest.approx((0.2, 0.4))
    # the Python defaults are the command line's: one clean epoch, a 5-epoch ramp to a half-clean mix
    cfg = TrainConfig()
    default = CertifiedLoss("inf", 0.2, Normalization((0.0,), (1.0,)))
    assert (default.warmup, default.ramp, default.mix) == (cfg.eps_warmup, cfg.eps_ramp, cfg.robust_mix)
    assert default.schedule(0.99) == (0.0, 1.0) and default.schedule(3.5) == pytest.approx((0.1, 0.75))


def test_the_lipschitz_margin_loss_is_the_margin_raised_cross_entropy() -> None:
    torch.manual_seed(0)
    model = mondeq.build_model("fc", (1, 8, 8), 4, hidden=8).double()
    x, labels = torch.randn(5, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    logits = model(x)
    loss = CertifiedLoss("2", 0.5, Normalization((0.0,), (0.5,)), warmup=0.0, ramp=0.0, mix=0.25)
    pairs = model.lipschitz("2", Normalization((0.0,), (1.0,))).pairs / 0.5  # the normalisation divides U by std
    raised = logits + 0.5 * pairs[labels]
    expected = 0.25 * torch.nn.functional.cross_entropy(logits, labels) + 0.75 * torch.nn.functional.cross_entropy(
        raised, labels)
    got = loss(model, x, labels, logits, 1.0)
    torch.testing.assert_close(got, expected)
    got.backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


def test_the_lipschitz_margin_loss_of_a_nemon_reaches_its_operator() -> None:
    """For a NEMON the ℓ2 margin loss uses its ℓ∞ bound (an ℓ2 one too), differentiable in every parameter."""
    torch.manual_seed(0)
    model = mondeq.build_model("nemon-fc", (1, 8, 8), 4, hidden=8).double()
    x, labels = torch.randn(5, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    loss = CertifiedLoss("2", 0.5, Normalization((0.0,), (1.0,)), warmup=0.0, ramp=0.0, mix=0.0)
    pairs = model.lipschitz("inf", Normalization((0.0,), (1.0,))).pairs
    logits = model(x)
    got = loss(model, x, labels, logits, 1.0)
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(logits + 0.5 * pairs[labels], labels))
    got.backward()
    assert model.mon.operator.delta.grad.abs().sum() > 0 and model.mon.input_map.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("model", ["fc", "conv"])
def test_interval_training_refuses_a_family_it_has_no_bound_for(model: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--model", model, "--epochs", "1", "--train-subset", "100", "--test-subset", "100",
                 "--certified-train", "inf", "--train-eps", "0.1", "--no-progress"])
    assert code == 2 and "NEMON" in capsys.readouterr().err
    assert main(["train", "--certified-train", "inf", "--train-eps", "-1", "--epochs", "1"]) == 2
