"""Named training recipes: one command per table row of the monDEQ paper (SPEC 6), and the NEMON and OptEq
recipes, and the certified-training ones.

The monDEQ presets use Peaceman–Rachford at tolerance 1e-2 with at most 300 iterations for training, m = 1,
batch 128 (test 400). The NEMON presets (SPEC 4.4) follow the original code: the average iteration at
tolerance 1e-2 with at most 300 iterations, γ = 0 (its experiments' ``m = 0``), Adam 1e-3 decayed ×0.1
every 10 (FC) or 25 (conv) epochs, batch 500/1000 (FC) or 120/200 (conv), no augmentation, 40 epochs (its
commented-out full runs); where it differs, the step size is ``α*`` (it fixes α by hand) and the
convolutions are 3 × 3 with zero padding (5 × 5 with a circular wrap in its code). The NEMON paper reports
no accuracy table that this library reproduces, so those presets list none. The OptEq presets (SPEC 4.5) use
the monDEQ recipe of the same dataset (Peaceman–Rachford included) with the default ``γ = 0.95``; the paper's
abstract reports no table either. The certified-training presets (``mnist-nemon-fc-ibp``: the interval-bound
loss at ``ε = 0.15``; ``mnist-fc-lmt``: the Lipschitz-margin loss at ℓ2 ``ε = 1``) train 25 epochs at batch
100, decay ×0.1 after 20, with one clean epoch and a 10-epoch ramp to a half-clean mix; the interval-bound one
Anderson-accelerates its average iteration (1.7× faster certified steps, docs/certified.md). Pass ``--data-dir``
for the data; explicit options override a preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

_PAPER = {"m": 1.0, "solver": "pr", "tol": 1e-2, "max_iter": 300, "batch_size": 128, "test_batch_size": 400,
          "augment_pad": 0, "augment_flip": False, "weight_decay": 0.0, "schedule": "step", "lr_gamma": 0.1}
_AUGMENT = {"augment_pad": 4, "augment_flip": True}
_NEMON = {"solver": "avg", "gamma": 0.0, "tol": 1e-2, "max_iter": 300, "augment_pad": 0, "augment_flip": False,
          "weight_decay": 0.0, "schedule": "step", "lr_gamma": 0.1}
_OPTEQ = {k: v for k, v in _PAPER.items() if k != "m"}
_NEMON_FC = {"batch_size": 500, "test_batch_size": 1000, "lr_step": 10}
_NEMON_CONV = {"batch_size": 120, "test_batch_size": 200, "lr_step": 25}
_CERTIFIED = {"epochs": 25, "batch_size": 100, "test_batch_size": 1000, "lr_step": 20, "eps_warmup": 1.0,
              "eps_ramp": 10.0, "robust_mix": 0.5}


@dataclass(frozen=True)
class Preset:
    """One experiment: the :class:`~mondeq.training.TrainConfig` fields it sets on top of its family's common
    ones (``common``), and the accuracy the paper reports for it."""

    paper_accuracy: str
    model: str
    dataset: str
    epochs: int
    lr: float
    options: dict[str, Any] = field(default_factory=dict)
    common: dict[str, Any] = field(default_factory=lambda: _PAPER)

    def config(self) -> dict[str, Any]:
        """The configuration fields of this preset."""
        own = {"model": self.model, "dataset": self.dataset, "epochs": self.epochs, "lr": self.lr}
        return {**self.common, **own, **self.options}


PRESETS: dict[str, Preset] = {
    "mnist-fc": Preset("98.1 ± 0.1%", "fc", "mnist", 40, 1e-3, {"lr_step": 10}),
    "mnist-conv": Preset("99.1 ± 0.1%", "conv", "mnist", 40, 1e-3, {"lr_step": 10}),
    "mnist-multitier": Preset("99.0 ± 0.1%", "multitier", "mnist", 40, 1e-3, {"lr_step": 10}),
    "mnist-multitier-fast": Preset("99.0 ± 0.1%", "multitier", "mnist", 5, 3e-3,
                                   {"schedule": "one-cycle", "augment_pad": 1}),
    "mnist-conv-fast": Preset("99.1 ± 0.1%", "conv", "mnist", 5, 3e-3, {"schedule": "one-cycle", "augment_pad": 1}),
    "cifar10-conv": Preset("74.0 ± 0.1%", "conv", "cifar10", 40, 1e-3, {"lr_step": 25}),
    "cifar10-conv-fast": Preset("74.0 ± 0.1%", "conv", "cifar10", 4, 3e-3,
                                {"schedule": "one-cycle", "augment_flip": True}),
    "cifar10-multitier": Preset("72.0 ± 0.3%", "multitier", "cifar10", 40, 1e-2, {"lr_step": 10}),
    "cifar10-conv-large": Preset("82.0 ± 0.3%", "conv-large", "cifar10", 65, 1e-2,
                                 {"schedule": "one-cycle", **_AUGMENT}),
    "cifar10-multitier-large": Preset("89.0 ± 0.3%", "multitier-large", "cifar10", 65, 5e-2,
                                      {"schedule": "one-cycle", **_AUGMENT}),
    "svhn-conv": Preset("88.7 ± 1.1%", "conv", "svhn", 40, 1e-3, {"lr_step": 25}),
    "svhn-multitier": Preset("92.4 ± 0.1%", "multitier", "svhn", 40, 1e-3, {"lr_step": 10}),
    "mnist-nemon-fc": Preset("none reported", "nemon-fc", "mnist", 40, 1e-3, _NEMON_FC, _NEMON),
    "mnist-nemon-conv": Preset("none reported", "nemon-conv", "mnist", 40, 1e-3, _NEMON_CONV, _NEMON),
    "cifar10-nemon-conv": Preset("none reported", "nemon-conv", "cifar10", 40, 1e-3, _NEMON_CONV, _NEMON),
    "mnist-nemon-fc-ibp": Preset("none reported", "nemon-fc", "mnist", 25, 1e-3,
                                 {**_CERTIFIED, "certified_train": "inf", "train_eps": 0.15, "anderson": True}, _NEMON),
    "mnist-fc-lmt": Preset("none reported", "fc", "mnist", 25, 1e-3,
                           {**_CERTIFIED, "certified_train": "2", "train_eps": 1.0}),
    "mnist-opteq-fc": Preset("none reported", "opteq-fc", "mnist", 40, 1e-3, {"lr_step": 10}, _OPTEQ),
    "mnist-opteq-deep-fc": Preset("none reported", "opteq-deep-fc", "mnist", 40, 1e-3, {"lr_step": 10}, _OPTEQ),
    "mnist-opteq-conv": Preset("none reported", "opteq-conv", "mnist", 40, 1e-3, {"lr_step": 10}, _OPTEQ),
    "cifar10-opteq-conv": Preset("none reported", "opteq-conv", "cifar10", 40, 1e-3, {"lr_step": 25}, _OPTEQ),
}
"""Preset name → :class:`Preset`."""


def preset(name: str) -> dict[str, Any]:
    """The configuration fields of a preset (unknown names raise :class:`~mondeq.errors.InputError`)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].config()
