"""A training run as configuration: :class:`TrainConfig` (what ``mondeq train`` parses and ``config.json``
holds) and the registry model it describes."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..data import Splits
from ..errors import InputError
from ..models import build_model
from ..normalization import Normalization
from ..priors import PRIORS
from ..robustness import CertifiedLoss
from ..solvers import default_solver, make_solver
from .loop import equilibrium_layers


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``)."""

    model: str = "fc"
    dataset: str = "mnist-mini"
    data_dir: str | None = None
    download: bool = False
    epochs: int = 40
    batch_size: int = 128
    test_batch_size: int = 400
    lr: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "step"
    lr_step: int | None = 30
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    augment_pad: int = 1
    augment_flip: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    subset_seed: int = 0
    hidden: int | None = None
    channels: int | list[int] | None = None
    m: float | None = None
    gamma: float | None = None
    prior: str | None = None
    prior_weight: float | None = None
    solver: str | None = None
    anderson: bool = False
    alpha: float | Literal["auto"] | None = None
    tol: float = 1e-2
    max_iter: int = 300
    eval_tol: float | None = 1e-3
    eval_alpha: float | Literal["auto"] | None = None
    eval_max_iter: int | None = None
    lipschitz_reg: float = 0.0
    bf16: bool = False
    certified_train: str | None = None
    train_eps: float = 0.0
    eps_warmup: float = 1.0
    eps_ramp: float = 5.0
    robust_mix: float = 0.5
    seed: int = 0
    device: str = "cpu"
    out: str | None = None

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "test_batch_size", "max_iter", "hidden"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        counts = [self.channels] if isinstance(self.channels, int) else self.channels or []
        if any(not isinstance(c, int) or c < 1 for c in counts):
            raise InputError(f"--channels must be counts ≥ 1, got {self.channels}")
        for name in ("lr", "lr_gamma", "tol"):
            if not getattr(self, name) > 0:
                raise InputError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.m is not None and not self.m > 0:
            raise InputError(f"--m must be > 0, got {self.m}")
        if self.gamma is not None and not self.gamma < 1:
            raise InputError(f"--gamma must be < 1, got {self.gamma}")
        if self.prior is not None and self.prior not in PRIORS:
            raise InputError(f"--prior must be one of {list(PRIORS)}, got {self.prior!r}")
        if self.prior_weight is not None and self.prior is None:
            raise InputError("--prior-weight needs --prior")
        if self.prior_weight is not None and not (self.prior_weight >= 0 and math.isfinite(self.prior_weight)):
            raise InputError(f"--prior-weight must be ≥ 0, got {self.prior_weight}")
        for name in ("weight_decay", "augment_pad", "lipschitz_reg"):
            if not getattr(self, name) >= 0:
                raise InputError(f"--{name.replace('_', '-')} must be ≥ 0, got {getattr(self, name)}")
        if self.certified_train is not None:
            CertifiedLoss(self.certified_train, self.train_eps, Normalization((0.0,), (1.0,)), self.eps_warmup,
                          self.eps_ramp, self.robust_mix)  # its one-line errors
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("eval_alpha", "alpha"):
            if isinstance(getattr(self, name), str) and getattr(self, name) != "auto":
                flag = name.replace("_", "-")
                raise InputError(f"--{flag} must be a number > 0 or auto, got {getattr(self, name)!r}")
        for name in ("eval_tol", "eval_alpha", "alpha"):
            if getattr(self, name) not in (None, "auto") and not getattr(self, name) > 0:
                raise InputError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.eval_max_iter is not None and self.eval_max_iter < 1:
            raise InputError(f"--eval-max-iter must be ≥ 1, got {self.eval_max_iter}")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise InputError(f"--device {self.device!r} is not a device (cpu, cuda, cuda:N)") from None
        if device.type == "cuda" and (
            not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
        ):
            raise InputError(f"--device {self.device} was asked for but no such CUDA device is available")


def _adam(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    fused = torch.device(cfg.device).type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def _sgd(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[[Any, TrainConfig], torch.optim.Optimizer]] = {"adam": _adam, "sgd": _sgd}
"""``--optimizer`` name → the optimiser of a configuration's learning rate and weight decay."""

Schedule = tuple[torch.optim.lr_scheduler.LRScheduler | None, str]


def _step(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int) -> Schedule:
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step, cfg.lr_gamma) if cfg.lr_step else None
    return scheduler, "epoch"


def _one_cycle(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int) -> Schedule:
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=cfg.epochs * steps), "batch"


SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, TrainConfig, int], Schedule]] = {
    "step": _step, "one-cycle": _one_cycle}
"""``--schedule`` name → ``(scheduler, "epoch" | "batch")`` for an optimiser and ``steps`` batches an epoch; only
``step`` schedules may grow their ``epochs`` on resume."""


def build_from_config(cfg: TrainConfig, splits: Splits) -> nn.Module:
    """The model of ``cfg`` with its training and evaluation solvers (``cfg.solver=None``: the family's
    default, :func:`~mondeq.solvers.default_solver`)."""
    info = splits.info
    options = {k: v for k, v in (("hidden", cfg.hidden), ("channels", cfg.channels), ("m", cfg.m),
                                 ("gamma", cfg.gamma), ("prior", cfg.prior), ("prior_weight", cfg.prior_weight))
               if v is not None}
    model = build_model(cfg.model, info.input_shape, info.num_classes, **options)
    opts: dict[str, Any] = {"alpha": cfg.alpha, "tol": cfg.tol, "max_iter": cfg.max_iter}
    changes = {k: v for k, v in (("tol", cfg.eval_tol), ("alpha", cfg.eval_alpha),
                                 ("max_iter", cfg.eval_max_iter)) if v is not None}
    for layer in equilibrium_layers(model):
        name = cfg.solver or default_solver(layer.operator.guarantee_type)
        layer.solver = make_solver(name, anderson=cfg.anderson, **opts)
        if cfg.solver is not None:  # a solver of another family fails now, not at the first batch
            layer.solver.check(layer.operator.frozen(), layer.activation)
        layer.eval_solver = layer.solver.with_options(**changes) if changes else None
    return model


def config_from_checkpoint(ckpt: dict, **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` saved in a checkpoint, with ``overrides`` applied."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = ckpt["config"]
    if not isinstance(saved, dict) or not saved or set(saved) - fields:
        raise InputError("the checkpoint's configuration is not one this version of mondeq knows "
                         "(a model built in Python is loaded with mondeq.training.load_weights)")
    if "subset_seed" not in saved:  # written before subsets had a seed of their own: they followed --seed
        saved = {**saved, "subset_seed": saved.get("seed", 0)}
    return TrainConfig(**{**saved, **overrides})
