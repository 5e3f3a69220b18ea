"""Named training recipes: one command per table row of the monDEQ paper (SPEC 6).

All use Peaceman–Rachford at tolerance 1e-2 with at most 300 iterations for training, m = 1, batch 128
(test 400). Pass ``--data-dir`` for the data; explicit options override a preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

_PAPER = {"m": 1.0, "solver": "pr", "tol": 1e-2, "max_iter": 300, "batch_size": 128, "test_batch_size": 400,
          "augment_pad": 0, "augment_flip": False, "weight_decay": 0.0, "schedule": "step", "lr_gamma": 0.1}
_AUGMENT = {"augment_pad": 4, "augment_flip": True}


@dataclass(frozen=True)
class Preset:
    """One experiment: the :class:`~mondeq.train.TrainConfig` fields it sets on top of the paper's common
    ones, and the accuracy the paper reports for it."""

    paper_accuracy: str
    model: str
    dataset: str
    epochs: int
    lr: float
    options: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        """The configuration fields of this preset."""
        own = {"model": self.model, "dataset": self.dataset, "epochs": self.epochs, "lr": self.lr}
        return {**_PAPER, **own, **self.options}


PRESETS: dict[str, Preset] = {
    "mnist-fc": Preset("98.1 ± 0.1%", "fc", "mnist", 40, 1e-3, {"lr_step": 10}),
    "mnist-conv": Preset("99.1 ± 0.1%", "conv", "mnist", 40, 1e-3, {"lr_step": 10}),
    "mnist-multitier": Preset("99.0 ± 0.1%", "multitier", "mnist", 40, 1e-3, {"lr_step": 10}),
    "cifar10-conv": Preset("74.0 ± 0.1%", "conv", "cifar10", 40, 1e-3, {"lr_step": 25}),
    "cifar10-multitier": Preset("72.0 ± 0.3%", "multitier", "cifar10", 40, 1e-2, {"lr_step": 10}),
    "cifar10-conv-large": Preset("82.0 ± 0.3%", "conv-large", "cifar10", 65, 1e-2,
                                 {"schedule": "one-cycle", **_AUGMENT}),
    "cifar10-multitier-large": Preset("89.0 ± 0.3%", "multitier-large", "cifar10", 65, 5e-2,
                                      {"schedule": "one-cycle", **_AUGMENT}),
    "svhn-conv": Preset("88.7 ± 1.1%", "conv", "svhn", 40, 1e-3, {"lr_step": 25}),
    "svhn-multitier": Preset("92.4 ± 0.1%", "multitier", "svhn", 40, 1e-3, {"lr_step": 10}),
}
"""Preset name → :class:`Preset`."""


def preset(name: str) -> dict[str, Any]:
    """The configuration fields of a preset (unknown names raise :class:`~mondeq.errors.InputError`)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].config()
