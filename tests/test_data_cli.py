"""Data sets, the training loop and the command line."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mondeq.cli import main
from mondeq.data import load_dataset, random_crop_flip, read_idx
from mondeq.errors import InputError, UnprovenSolverError
from mondeq.training import TrainConfig, build_from_config, equilibrium_layers, model_from_checkpoint, train


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def _fake_mnist(root: Path, compress: bool = True, n_train: int = 60, n_test: int = 20) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), compress)
        _write_idx(root / f"{stem}-labels-idx1-ubyte", np.arange(n) % 10, compress)


def test_embedded_mnist_mini() -> None:
    s = load_dataset("mnist-mini")
    assert s.train_images.shape == (10_000, 1, 28, 28) and s.train_images.dtype == torch.uint8
    assert s.test_images.shape == (2_000, 1, 28, 28)
    assert torch.equal(s.train_labels.bincount(), torch.full((10,), 1000))
    assert torch.equal(s.test_labels.bincount(), torch.full((10,), 200))
    x = s.normalize(s.train_images[:1000])
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1
    a = load_dataset("mnist-mini", train_subset=100, test_subset=50, subset_seed=3)
    b = load_dataset("mnist-mini", train_subset=100, test_subset=50, subset_seed=3)
    assert torch.equal(a.train_images, b.train_images) and len(a.test_labels) == 50


@pytest.mark.parametrize("layout", ["", "mnist", "MNIST/raw"])
@pytest.mark.parametrize("compress", [True, False])
def test_mnist_layouts(tmp_path: Path, layout: str, compress: bool) -> None:
    _fake_mnist(tmp_path / layout, compress)
    s = load_dataset("mnist", tmp_path)
    assert s.train_images.shape == (60, 1, 28, 28) and s.test_labels.tolist()[:3] == [0, 1, 2]
    assert np.array_equal(read_idx(next((tmp_path / layout).glob("t10k-labels*"))), np.arange(20) % 10)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs --data-dir"):
        load_dataset("mnist")
    with pytest.raises(InputError, match="needs --data-dir"):
        load_dataset("cifar10")
    with pytest.raises(InputError, match=r"MNIST files missing: train-images-idx3-ubyte\[.gz\]"):
        load_dataset("mnist", tmp_path)
    _fake_mnist(tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:1000]))
    with pytest.raises(InputError, match="truncated"):
        load_dataset("mnist", tmp_path)
    p.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="cannot read"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(InputError, match="unknown dataset"):
        load_dataset("imagenet")


def test_fashion_mnist_layout(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "FashionMNIST" / "raw")
    s = load_dataset("fashion-mnist", tmp_path)
    assert s.info.mean == (0.2860,) and s.train_images.shape == (60, 1, 28, 28)


def _fake_cifar(folder: Path, n: int = 20) -> np.ndarray:
    import pickle

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        first = data if first is None else first
        batch = {b"data": data, b"labels": list(rng.integers(0, 10, n)), b"batch_label": b"x",
                 b"filenames": [b"f"] * n}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return first


def test_cifar10_reader(tmp_path: Path) -> None:
    first = _fake_cifar(tmp_path / "cifar-10-batches-py")
    s = load_dataset("cifar10", tmp_path)
    assert s.train_images.shape == (100, 3, 32, 32) and s.test_images.shape == (20, 3, 32, 32)
    # the official row layout: 1024 red, then green, then blue values, each row-major
    assert np.array_equal(s.train_images[0, 1].numpy().reshape(-1), first[0, 1024:2048])
    with pytest.raises(InputError, match="CIFAR-10 files missing: data_batch_1"):
        load_dataset("cifar10", tmp_path / "nowhere")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"broken")
    with pytest.raises(InputError, match="cannot read"):
        load_dataset("cifar10", tmp_path)


def test_svhn_reader(tmp_path: Path) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    folder = tmp_path / "svhn"
    folder.mkdir()
    for name, n in (("train_32x32.mat", 12), ("test_32x32.mat", 5)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # the official files store 0 as 10
        savemat(folder / name, {"X": x, "y": y})
        if name.startswith("train"):
            first = x[:, :, :, 0]
    s = load_dataset("svhn", tmp_path)
    assert s.train_images.shape == (12, 3, 32, 32) and s.test_labels.tolist() == [1, 2, 3, 4, 5]
    assert s.train_labels.tolist()[9] == 0
    assert np.array_equal(s.train_images[0].numpy(), first.transpose(2, 0, 1))
    with pytest.raises(InputError, match="SVHN files missing"):
        load_dataset("svhn", tmp_path / "nowhere")


def test_download_from_a_mirror(tmp_path: Path) -> None:
    import tarfile

    from mondeq.data import download

    remote = tmp_path / "remote"
    _fake_mnist(remote)
    _fake_cifar(remote / "build" / "cifar-10-batches-py")
    with tarfile.open(remote / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(remote / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data = tmp_path / "data"
    for name in ("mnist", "cifar10"):
        download(name, data, base_url=remote.as_uri() + "/")
    assert load_dataset("mnist", data).train_images.shape == (60, 1, 28, 28)
    assert load_dataset("cifar10", data).test_images.shape == (20, 3, 32, 32)
    assert not list(data.rglob("*.part")) and not (data / "cifar-10-python.tar.gz").exists()
    with pytest.raises(InputError, match="cannot download"):
        download("svhn", data, base_url=(tmp_path / "nowhere").as_uri() + "/")
    assert not list(data.rglob("*.part"))
    with pytest.raises(InputError, match="nothing to download"):
        download("mnist-mini", data)


def test_random_crop_flip() -> None:
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    assert torch.equal(random_crop_flip(x, 0, False), x)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, 2, True, g)
    assert out.shape == x.shape
    assert torch.equal(out, random_crop_flip(x, 2, True, torch.Generator().manual_seed(0)))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # every output is a crop of the padded image, possibly mirrored
        crops = [padded[i, :, r : r + 5, c : c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)


def test_train_writes_metrics_checkpoint_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(["train", "--epochs", "2", "--train-subset", "600", "--test-subset", "200",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "test_acc", "fwd_iters", "bwd_iters", "epoch_time_s"):
        assert all(key in r for r in rows)
    assert 0.0 <= rows[-1]["test_acc"] <= 1.0 and rows[-1]["fwd_iters"] >= 1
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and "model" in ckpt
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*.tmp"))


def test_same_seed_same_result() -> None:
    cfg = dict(epochs=1, train_subset=300, test_subset=100, seed=5)
    a = train(TrainConfig(**cfg), progress=False, log=lambda s: None)
    b = train(TrainConfig(**cfg), progress=False, log=lambda s: None)
    assert a[0]["train_loss"] == b[0]["train_loss"] and a[0]["test_acc"] == b[0]["test_acc"]


@pytest.mark.parametrize("args,message", [
    (["train", "--model", "resnet"], "unknown model 'resnet'"),
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["train", "--dataset", "mnist", "--data-dir", "/nonexistent/dir"], "MNIST files missing"),
    (["train", "--epochs", "0"], "--epochs must be"),
    (["train", "--m", "0"], "--m must be > 0"),
    (["train", "--eval-alpha", "0"], "--eval-alpha must be > 0"),
    (["train", "--alpha", "fast"], "expected a number or auto"),
    (["train", "--device", "tpu9"], "is not a device"),
    (["train", "--augment-pad", "-1"], "--augment-pad must be"),
    (["train", "--preset", "imagenet-vit"], "invalid choice"),
    (["train", "--epochs", "three"], "invalid int value"),
    (["train", "--preset", "cifar10-conv"], "needs --data-dir"),
    (["train", "--solver", "fb", "--alpha", "50", "--epochs", "1", "--train-subset", "64"], "not provably"),
    (["train", "--model", "multitier", "--channels", "32"], "one channel count per tier"),
    (["train", "--model", "conv", "--channels", "4,4"], "has one channel count"),
    (["train", "--model", "multitier", "--channels", "16,x"], "one count per tier"),
    (["train", "--model", "fc", "--channels", "8"], "has no option"),
])
def test_cli_errors_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main([*args, "--no-progress"])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mondeq: error:") and message in lines[0], lines


def test_the_auto_step_from_the_command_line(tmp_path: Path) -> None:
    """``--alpha auto`` reaches the solver, which reports the step it derived: 1/√(mL) < 1 for m = 1."""
    assert main(["train", "--alpha", "auto", "--epochs", "1", "--train-subset", "64", "--test-subset", "32",
                 "--no-progress", "--out", str(tmp_path)]) == 0
    model, _, _ = model_from_checkpoint(tmp_path / "checkpoint.pt")
    layer = equilibrium_layers(model)[0]
    assert layer.solver.alpha == "auto"
    model(torch.rand(4, 1, 28, 28))
    assert layer.last_solve is not None and 0 < layer.last_solve.forward.alpha < 1
    with pytest.raises(InputError, match="a number > 0 or auto"):
        TrainConfig(alpha="quick").validate()  # type: ignore[arg-type]


def test_cli_errors_in_a_fresh_process() -> None:
    """The same one-line error and exit code 2 from the installed entry point."""
    proc = subprocess.run([sys.executable, "-m", "mondeq.cli", "train", "--model", "resnet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'resnet'" in lines[0], proc.stderr


def test_multitier_channels_per_tier(tmp_path: Path) -> None:
    assert main(["train", "--model", "multitier", "--channels", "2,3,3", "--epochs", "1", "--train-subset", "32",
                 "--test-subset", "16", "--batch-size", "16", "--no-progress", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["channels"] == [2, 3, 3]


def test_solves_that_miss_their_tolerance_are_reported_once_per_epoch(tmp_path: Path) -> None:
    """A learning rate far too large: every solve runs to max_iter. No warning per solve (the suite turns
    warnings into errors); one line per epoch, and the counts in metrics.jsonl and the figure."""
    lines: list[str] = []
    cfg = TrainConfig(epochs=2, lr=10.0, max_iter=5, eval_max_iter=5, eval_tol=1e-6, train_subset=128,
                      test_subset=64, batch_size=32, out=str(tmp_path))
    rows = train(cfg, progress=False, log=lines.append)
    missed = [line for line in lines if "missed tol" in line]
    assert len(missed) == 2 and "of 8 training solves missed tol=0.01" in missed[0], lines
    for row in rows:
        assert 0 < row["missed_solves"] <= 8 and row["worst_residual"] > 1e-2
        assert row["test_missed_solves"] == 1 and row["test_worst_residual"] > 1e-6
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_presets_and_their_paper_accuracy_are_one_table(capsys: pytest.CaptureFixture[str]) -> None:
    from mondeq.presets import PRESETS, Preset

    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    for name, p in PRESETS.items():
        assert isinstance(p, Preset) and f"(paper: {p.paper_accuracy})" in listing and name in listing


def test_listings(capsys: pytest.CaptureFixture[str]) -> None:
    from mondeq.models import MODELS, model_info

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{name} " in f"\n{out}" for name in MODELS)
    # each model says which solvers have a proof for its operator, its default and its options' defaults
    assert "--solver pr (default), fb, dr; --hidden 87; --m 1.0" in out
    assert "blocks 72,72,72; --gamma 0.95; --prior (none)" in out and "--channels (the data set's)" in out
    assert "--solver avg (default); --hidden 100; --gamma 0.0" in out
    assert model_info("opteq-deep-fc").options["hidden"] == (72, 72, 72)  # a registered variant's own default
    assert model_info("opteq-fc").solvers == ["fb", "pr", "dr", "halpern"]  # ‖W‖₂ < 1: the anchor is proved
    with pytest.raises(InputError, match="unknown model"):
        model_info("resnet")
    assert main(["datasets"]) == 0 and "mnist-mini" in capsys.readouterr().out


def test_a_closed_pipe_ends_the_listing_quietly() -> None:
    proc = subprocess.run(f"{sys.executable} -m mondeq.cli models | head -c 10", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout == "fc        " and proc.stderr == ""


def test_default_training_reaches_95_percent() -> None:
    """The README's main job: the default model on the embedded data, full default schedule."""
    history = train(TrainConfig(), progress=False, log=lambda s: None)
    assert history[-1]["test_acc"] >= 0.95


def _quiet(_: str) -> None:
    pass


@pytest.mark.parametrize("variant", [
    {},
    {"schedule": "one-cycle", "lr": 1e-2},
    {"model": "conv", "channels": 3, "train_subset": 64, "test_subset": 32, "batch_size": 32},
    {"anderson": True, "solver": "dr"},
], ids=["step", "one-cycle", "conv", "anderson"])
def test_resume_continues_bit_for_bit(tmp_path: Path, variant: dict) -> None:
    cfg = {**dict(epochs=3, train_subset=256, test_subset=64, seed=3, lr_step=1, batch_size=64), **variant}
    full = train(TrainConfig(**cfg, out=str(tmp_path / "a")), progress=False, log=_quiet)
    if cfg.get("schedule") == "one-cycle":  # a fixed schedule: stopped during epoch 2 of the same run

        def stop_in_epoch_2(line: str) -> None:
            if line.startswith("epoch   2/3  step"):
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**cfg, out=str(tmp_path / "b")), progress=True, log=stop_in_epoch_2)
    else:  # a step schedule also grows: 1 epoch, then continued to 3
        train(TrainConfig(**{**cfg, "epochs": 1}, out=str(tmp_path / "b")), progress=False, log=_quiet)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = train(TrainConfig(**cfg, out=str(tmp_path / "b")), progress=False, log=_quiet, resume=True)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]

    assert strip(resumed) == strip(full)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 3
    with pytest.raises(InputError, match="different configuration"):
        train(TrainConfig(**{**cfg, "lr": 0.1}, out=str(tmp_path / "b")), progress=False, log=_quiet, resume=True)


def test_eval_and_checkpoint_errors(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--train-subset", "128", "--test-subset", "64", "--no-progress",
                 "--out", str(out)]) == 0
    ckpt = out / "checkpoint.pt"
    proc = subprocess.run([sys.executable, "-m", "mondeq.cli", "eval", "--checkpoint", str(ckpt), "--json",
                           "--test-subset", "64"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["n"] == 64 and 0 <= r["test_acc"] <= 1 and r["fwd_iters"] >= 1 and r["model"] == "fc"

    good = ckpt.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    other = tmp_path / "other.pt"
    data = torch.load(ckpt, weights_only=True)
    data["config"]["model"] = "conv"
    torch.save(data, other)
    for path, message in ((truncated, "corrupt or truncated"), (garbage, "corrupt or truncated"),
                          (other, "different model"), (tmp_path / "missing.pt", "no checkpoint")):
        before = path.read_bytes() if path.exists() else None
        proc = subprocess.run([sys.executable, "-m", "mondeq.cli", "eval", "--checkpoint", str(path)],
                              capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
        assert (path.read_bytes() if path.exists() else None) == before
    # a run whose checkpoint is damaged cannot be resumed, and stays as it was
    ckpt.write_bytes(good[:100])
    code = main(["train", "--epochs", "2", "--train-subset", "128", "--test-subset", "64", "--no-progress",
                 "--out", str(out), "--resume"])
    assert code == 2 and ckpt.read_bytes() == good[:100]


def test_a_run_in_out_is_never_lost_to_a_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    small = ["--epochs", "1", "--train-subset", "64", "--test-subset", "32", "--no-progress"]
    out = tmp_path / "run"
    assert main(["train", *small, "--seed", "7", "--out", str(out)]) == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    mask = os.umask(0)
    os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~mask}  # as a plain write makes them
    capsys.readouterr()

    def refused(args: list[str], message: str) -> None:
        assert main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
        assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # nothing written, nothing removed

    refused(["train", *small, "--out", str(out)], "holds a run already")  # forgot --resume
    refused(["train", *small, "--out", str(out), "--resume", "--overwrite"], "exclude each other")
    # an unsafe step is refused at the first solve: --overwrite writes nothing before an epoch has ended
    refused(["train", *small, "--solver", "fb", "--alpha", "50", "--out", str(out), "--overwrite"], "not provably")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    refused(["train", *small, "--out", str(blocker / "sub")], "cannot create the output folder")
    ckpt = str(out / "checkpoint.pt")
    for plot, message in ((tmp_path / "missing" / "c.png", "no folder"), (tmp_path / "c.xyz", "not a figure")):
        refused(["certify", "--checkpoint", ckpt, "--eps", "0.1", "--plot", str(plot), "--no-progress"], message)
    assert main(["train", *small, "--seed", "8", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 8

    # a subset is one fixed permutation, whatever the run's seed: runs of different seeds see the same images
    _, splits, _ = model_from_checkpoint(out / "checkpoint.pt", test_subset=32)
    assert torch.equal(splits.test_images, load_dataset("mnist-mini", test_subset=32).test_images)
    seen: list[dict] = []
    monkeypatch.setattr("mondeq.training.run.load_dataset", lambda *a, **k: seen.append(k) or load_dataset(*a, **k))
    assert main(["train", *small, "--seed", "9", "--out", str(tmp_path / "s"), "--subset-seed", "3"]) == 0
    assert [k["subset_seed"] for k in seen] == [3]  # the training run's subsets: their own seed, not --seed
    # a checkpoint written before subsets had a seed of their own keeps the images it was trained and tested on
    old = torch.load(out / "checkpoint.pt", weights_only=True)
    del old["config"]["subset_seed"]
    torch.save(old, tmp_path / "old.pt")
    _, splits, _ = model_from_checkpoint(tmp_path / "old.pt", test_subset=32)
    assert torch.equal(splits.test_images, load_dataset("mnist-mini", test_subset=32, subset_seed=8).test_images)


def test_presets_fill_the_recipe_and_options_override(tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert main(["train", "--preset", "mnist-fc", "--dataset", "mnist-mini", "--epochs", "1", "--train-subset",
                 "128", "--test-subset", "64", "--no-progress", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "fc" and cfg["dataset"] == "mnist-mini" and cfg["epochs"] == 1
    assert cfg["lr_step"] == 10 and cfg["augment_pad"] == 0 and cfg["tol"] == 1e-2
    from mondeq.presets import PRESETS, preset

    for name in PRESETS:  # every preset is a valid configuration of an existing model and dataset
        TrainConfig(**preset(name)).validate()


def test_one_cycle_schedule(tmp_path: Path) -> None:
    rows = train(TrainConfig(epochs=4, schedule="one-cycle", lr=1e-2, train_subset=256, test_subset=32,
                             batch_size=32), progress=False, log=_quiet)
    lrs = [r["lr"] for r in rows]  # warm-up to the peak within the first third, then annealing
    assert max(lrs) <= 1e-2 and lrs[0] > 5e-3 and lrs[1] > lrs[2] > lrs[3]


def test_bench_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", "fc", "--solvers", "pr,fb+anderson", "--reps", "1", "--batch-size", "16",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["solvers"]) == {"pr", "fb+anderson"} and r["solvers"]["pr"]["fwd_ratio"] == 1.0
    assert r["solvers"]["pr"]["fwd_iters"] >= 1 and r["training_step"]["step_s"] > 0
    assert main(["bench", "--solvers", "newton", "--reps", "1"]) == 2
    capsys.readouterr()
    assert main(["bench", "--model", "fc", "--solvers", "pr", "--reps", "1", "--batch-size", "16"]) == 0
    assert "MB peak resident" in capsys.readouterr().out


def test_bench_takes_any_module_with_one_equilibrium_layer() -> None:
    import mondeq
    from mondeq.bench import bench

    torch.manual_seed(0)
    features = [torch.nn.Conv2d(1, 2, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten()]
    layer = mondeq.EquilibriumLayer(torch.nn.Linear(2 * 13 * 13, 12), mondeq.DenseMonotone(12, m=1.0),
                                    solver=mondeq.ForwardBackward(tol=1e-2),
                                    eval_solver=mondeq.PeacemanRachford(tol=1e-6))
    model = mondeq.compose((1, 28, 28), features, layer, torch.nn.Linear(12, 10)).eval()
    x, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = bench(model, x, labels, solvers=["pr", "dr"], reps=1)
    assert set(r["solvers"]) == {"pr", "dr"} and r["training_solver"] == "forward-backward"  # the layer's own
    assert r["training_step"]["step_s"] > 0 and r["solvers"]["dr"]["fwd_iters"] >= 1
    assert layer.last_solve.forward.solver == "forward-backward"  # timed in training mode, not by the eval_solver
    assert not model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(UnprovenSolverError, match="not proved"):
        bench(model, x, labels, solvers=["avg"], reps=1)  # an ℓ∞ solver on an ℓ2 operator
    with pytest.raises(InputError, match="exactly one equilibrium layer"):
        bench(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), x, labels, reps=1)


def test_torchrun_two_processes_match_one(tmp_path: Path) -> None:
    """Data parallel on 2 CPU processes (gloo) against one process with the same global batch. Plain SGD
    makes the weight update a sum of the gradients, so a wrong scale of the reduced gradients shows in full
    (×2 gives a relative difference of about 1); sharding and the solver tolerance 1e-5 account for ~1e-4."""
    args = ["train", "--epochs", "2", "--train-subset", "384", "--test-subset", "96", "--batch-size", "64",
            "--augment-pad", "1", "--no-progress", "--seed", "4", "--tol", "1e-5", "--eval-tol", "1e-5",
            "--optimizer", "sgd", "--lr", "0.05"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "mondeq.cli", *args, "--out", str(tmp_path / "one")], env=env,
                   check=True, capture_output=True, timeout=300)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "mondeq.cli", *args, "--out", str(tmp_path / "two")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stderr[:3000]}\n…\n{proc.stderr[-1000:]}"  # workers first, launcher last
    assert proc.stdout.count("final test accuracy") == 1  # rank 0 reports
    one = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "test_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-3)
    cfg = TrainConfig(**json.loads((tmp_path / "one" / "config.json").read_text()))
    splits = load_dataset(cfg.dataset, train_subset=cfg.train_subset, test_subset=cfg.test_subset)
    torch.manual_seed(cfg.seed)
    start = build_from_config(cfg, splits).state_dict()
    wa = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["model"]
    moved = torch.cat([(wa[k] - start[k]).flatten() for k in wa])
    apart = torch.cat([(wb[k] - wa[k]).flatten() for k in wa])
    assert float(moved.norm()) > 1e-2  # the weights did move
    assert float(apart.norm() / moved.norm()) < 1e-2


def test_progress_lines_in_a_log_and_a_figure_every_epoch(tmp_path: Path) -> None:
    """Off a terminal the progress bar gives way to a log line every tenth of an epoch; the figure is
    written after every epoch, so a stopped run keeps one."""
    lines: list[str] = []
    cfg = TrainConfig(epochs=2, train_subset=320, test_subset=32, batch_size=32, out=str(tmp_path))
    train(cfg, progress=True, log=lines.append)  # pytest's captured stderr is not a terminal
    steps = [line for line in lines if " step " in line]
    assert len(steps) == 2 * 9 and steps[0].startswith("epoch   1/2  step 1/10  train loss ")
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))
