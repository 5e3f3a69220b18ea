"""The scripts under ``examples/`` run, on tiny sizes, and what they print is consistent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_certify_in_python(capsys) -> None:
    result = _load("certify_in_python").main(steps=30, images=60)
    assert result["n"] == 60 and "clean" in capsys.readouterr().out
    for row in result["results"]:  # certify itself raises if the attack breaks a certified point
        assert row["certified_acc"] <= row["pgd_acc"] <= result["clean_acc"]


def test_custom_model(tmp_path, capsys) -> None:
    # a CNN + NEMON layer: fit, resume, reload, evaluate, certify (certify raises if PGD breaks a certified point)
    result = _load("custom_model").main("nemon", epochs=2, out=str(tmp_path / "run"), images=60, train_images=200)
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "metrics.png").exists()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    out = capsys.readouterr().out
    assert len(lines) == 2 and "resuming" in out and out.count("epoch   2/2") == 1  # the second call resumed
    assert result["clean_acc"] == result["test_acc"] and "certified" in out
    for row in result["results"]:
        assert row["certified_acc"] <= row["pgd_acc"] <= result["clean_acc"]
