"""Named training recipes: one command per table row of the monDEQ paper (SPEC 6).

All use Peaceman–Rachford at tolerance 1e-2 with at most 300 iterations for training, m = 1, batch 128
(test 400). Pass ``--data-dir`` for the data; explicit options override a preset.
"""

from __future__ import annotations

from typing import Any

_PAPER = {"m": 1.0, "solver": "pr", "tol": 1e-2, "max_iter": 300, "batch_size": 128, "test_batch_size": 400,
          "augment_pad": 0, "augment_flip": False, "weight_decay": 0.0}
_AUGMENT = {"augment_pad": 4, "augment_flip": True}

PRESETS: dict[str, dict[str, Any]] = {
    "mnist-fc": {"model": "fc", "dataset": "mnist", "epochs": 40, "lr": 1e-3, "lr_step": 10},
    "mnist-conv": {"model": "conv", "dataset": "mnist", "epochs": 40, "lr": 1e-3, "lr_step": 10},
    "mnist-multitier": {"model": "multitier", "dataset": "mnist", "epochs": 40, "lr": 1e-3, "lr_step": 10},
    "cifar10-conv": {"model": "conv", "dataset": "cifar10", "epochs": 40, "lr": 1e-3, "lr_step": 25},
    "cifar10-multitier": {"model": "multitier", "dataset": "cifar10", "epochs": 40, "lr": 1e-2, "lr_step": 10},
    "cifar10-conv-large": {"model": "conv-large", "dataset": "cifar10", "epochs": 65, "lr": 1e-2,
                           "schedule": "one-cycle", **_AUGMENT},
    "cifar10-multitier-large": {"model": "multitier-large", "dataset": "cifar10", "epochs": 65, "lr": 5e-2,
                                "schedule": "one-cycle", **_AUGMENT},
    "svhn-conv": {"model": "conv", "dataset": "svhn", "epochs": 40, "lr": 1e-3, "lr_step": 25},
    "svhn-multitier": {"model": "multitier", "dataset": "svhn", "epochs": 40, "lr": 1e-3, "lr_step": 10},
}
"""Preset name → the :class:`~mondeq.train.TrainConfig` fields it sets (on top of the paper's common ones)."""

PAPER_ACCURACY = {
    "mnist-fc": "98.1 ± 0.1%", "mnist-conv": "99.1 ± 0.1%", "mnist-multitier": "99.0 ± 0.1%",
    "cifar10-conv": "74.0 ± 0.1%", "cifar10-multitier": "72.0 ± 0.3%", "cifar10-conv-large": "82.0 ± 0.3%",
    "cifar10-multitier-large": "89.0 ± 0.3%", "svhn-conv": "88.7 ± 1.1%", "svhn-multitier": "92.4 ± 0.1%",
}


def preset(name: str) -> dict[str, Any]:
    """The configuration fields of a preset (unknown names raise :class:`~mondeq.errors.InputError`)."""
    from .errors import InputError

    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return {"schedule": "step", "lr_gamma": 0.1, **_PAPER, **PRESETS[name]}
