"""The Python training API: a model built in Python (not in the registry) through the library's loop, with data
as tensors or a loader, a custom loss, callbacks, checkpoints, resume and evaluation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mondeq
from mondeq.data import load_dataset
from mondeq.errors import InputError
from mondeq.training import Callback, StepInfo, evaluate, fit, load_weights


class CNNEquilibrium(nn.Module):
    """A small explicit feature extractor, a dense monotone equilibrium on its features, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten())
        self.mon = mondeq.EquilibriumLayer(nn.Linear(4 * 13 * 13, 24), mondeq.DenseMonotone(24, m=1.0))
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mon(self.features(x)))


@pytest.fixture(scope="module")
def data() -> tuple:
    splits = load_dataset("mnist-mini", train_subset=192, test_subset=96, subset_seed=0)
    return splits, (splits.train_images, splits.train_labels), (splits.test_images, splits.test_labels)


def _quiet(_: str) -> None:
    pass


def _run(data: tuple, out: Path | None, epochs: int, resume: bool = False, **kw) -> tuple[nn.Module, list]:
    splits, train, test = data
    torch.manual_seed(0)
    model = CNNEquilibrium()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)  # its state matters on resume
    rows = fit(model, train, test, epochs=epochs, optimizer=opt, scheduler=sched, prepare=splits.normalize,
               batch_size=64, out=out, resume=resume, progress=False, log=_quiet, **kw)
    return model, rows


def test_a_composed_model_trains_saves_resumes_and_evaluates(data: tuple, tmp_path: Path) -> None:
    class Count(Callback):
        def __init__(self) -> None:
            self.steps: list[StepInfo] = []
            self.epochs: list[dict] = []

        def on_step(self, model: nn.Module, info: StepInfo) -> None:
            self.steps.append(info)

        def on_epoch(self, model: nn.Module, metrics: dict) -> None:
            self.epochs.append(metrics)

    count = Count()
    full, rows = _run(data, tmp_path / "a", 3, callbacks=[count])
    assert [r["epoch"] for r in rows] == [1, 2, 3] and count.epochs == rows
    assert len(count.steps) == 3 * 3 and {s.steps for s in count.steps} == {3}
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]  # it learns
    for row in rows:  # the epoch's metrics are the means over its steps, every image counted once
        steps = [s for s in count.steps if s.epoch == row["epoch"]]
        assert sum(len(s.labels) for s in steps) == 192
        assert row["train_loss"] == pytest.approx(sum(s.loss * len(s.labels) for s in steps) / 192, rel=1e-12)
        correct = sum(int((s.logits.argmax(1) == s.labels).sum()) for s in steps)
        assert row["train_acc"] == correct / 192
    assert [r["lr"] for r in rows] == pytest.approx([3e-3, 1.5e-3, 1.5e-3])
    for name in ("metrics.jsonl", "checkpoint.pt", "metrics.png"):
        assert (tmp_path / "a" / name).is_file()
    assert not (tmp_path / "a" / "config.json").exists()  # no configuration given, none written

    _run(data, tmp_path / "b", 1)
    resumed, again = _run(data, tmp_path / "b", 3, resume=True)

    def strip(rs: list) -> list:
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rs]

    assert strip(again) == strip(rows)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    splits, _, test = data
    fresh = CNNEquilibrium()
    ckpt = load_weights(fresh, tmp_path / "b" / "checkpoint.pt")
    assert ckpt["epoch"] == 3
    result = evaluate(fresh, test, prepare=splits.normalize, batch_size=50)
    assert result["test_acc"] == pytest.approx(rows[-1]["test_acc"])
    with pytest.raises(InputError, match="different model"):
        load_weights(nn.Linear(3, 3), tmp_path / "b" / "checkpoint.pt")
    with pytest.raises(InputError, match="load_weights"):  # not a registry run: no configuration to rebuild from
        mondeq.training.model_from_checkpoint(tmp_path / "b" / "checkpoint.pt")


def test_a_loader_a_custom_loss_and_an_early_stop(data: tuple, tmp_path: Path) -> None:
    splits, train, test = data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*train), batch_size=64, shuffle=False)
    seen: list[float] = []

    def smoothed(model, inputs, labels, logits, epochs_done):  # an Objective of one's own
        seen.append(epochs_done)
        return F.cross_entropy(logits, labels, label_smoothing=0.1)

    class StopAfterTwo(Callback):
        def on_epoch(self, model: nn.Module, metrics: dict) -> bool:
            return metrics["epoch"] == 2

    torch.manual_seed(0)
    model = CNNEquilibrium()
    rows = fit(model, loader, loader_of(test), epochs=5, loss=smoothed, callbacks=[StopAfterTwo()],
               prepare=splits.normalize, out=tmp_path, progress=False, log=_quiet)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert seen == pytest.approx([e + s / 3 for e in range(2) for s in range(3)])
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 2
    by_tensors = evaluate(model, test, prepare=splits.normalize)
    assert by_tensors["test_acc"] == pytest.approx(rows[-1]["test_acc"])
    assert by_tensors["test_fwd_iters"] > 0  # the equilibrium solves were counted


def loader_of(pair: tuple) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*pair), batch_size=40)


def test_bad_data_gets_one_line_errors(data: tuple, tmp_path: Path) -> None:
    splits, (x, y), _ = data
    model = CNNEquilibrium()
    for bad, match in [((x, y[:-1]), "same length"), ((x[:0], y[:0]), "no images"), ((x,), "two tensors")]:
        with pytest.raises(InputError, match=match):
            fit(model, bad, epochs=1, log=_quiet)
    with pytest.raises(InputError, match="yield"):
        fit(model, [x[:4]], epochs=1, prepare=splits.normalize, log=_quiet)
    with pytest.raises(InputError, match="length"):
        fit(model, iter([(x[:4], y[:4])]), epochs=1, prepare=splits.normalize, log=_quiet)
    with pytest.raises(InputError, match="schedule_per"):
        fit(model, (x, y), epochs=1, schedule_per="step", log=_quiet)
    with pytest.raises(InputError, match="resuming needs out"):
        fit(model, (x, y), epochs=1, resume=True, log=_quiet)
    with pytest.raises(InputError, match="no checkpoint"):
        fit(model, (x, y), epochs=1, resume=True, out=tmp_path, log=_quiet)


def test_bfloat16_autocast_trains_like_float32() -> None:
    """``--bf16``: the same run in bfloat16 autocast (the equilibria in float32) ends close to the float32 one.
    Each step's logits carry bfloat16's ~0.4% rounding (unit roundoff 2⁻⁸); over two epochs the training
    losses drift apart by 0.01–0.15% here, so 2% leaves a wide margin yet fails a run that diverges. The runs
    must differ, or autocast did nothing."""
    from mondeq.training import TrainConfig, train

    cfg = dict(epochs=2, train_subset=600, test_subset=200, batch_size=50, seed=3)
    full = train(TrainConfig(**cfg), progress=False, log=lambda s: None)
    half = train(TrainConfig(**cfg, bf16=True), progress=False, log=lambda s: None)
    for a, b in zip(full, half, strict=True):
        assert b["train_loss"] != a["train_loss"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.02)
        assert abs(b["test_acc"] - a["test_acc"]) <= 0.02


def test_the_core_loads_torch_and_numpy_only_and_the_application_on_first_use() -> None:
    code = ("import sys, numpy, torch\n"
            "before = set(sys.modules)\n"
            "import mondeq\n"
            "new = {m.split('.')[0] for m in set(sys.modules) - before} - {'mondeq'} - sys.stdlib_module_names\n"
            "app = sorted(m for m in sys.modules\n"
            "             if m.startswith(('mondeq.training', 'mondeq.data', 'mondeq.bench', 'mondeq.presets')))\n"
            "assert not new and not app, (new, app)\n"
            "assert callable(mondeq.training.fit) and callable(mondeq.bench.bench) and mondeq.data.DATASETS\n"
            "try:\n    mondeq.nothing\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no error')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
