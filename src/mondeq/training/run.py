"""The command line's jobs as functions of a :class:`~mondeq.training.TrainConfig`: train a registry model on
a registry data set, and load or evaluate what such a run saved."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Splits, download, load_dataset, random_crop_flip
from ..errors import InputError
from ..robustness import CertifiedLoss, LipschitzPenalty, certify, plot_certify
from .checkpoints import load_checkpoint, load_model_state
from .config import OPTIMIZERS, SCHEDULES, TrainConfig, build_from_config, config_from_checkpoint
from .distributed import process_group
from .loop import Objective, Regularizer, check_out, cross_entropy, evaluate, fit, solver_name
from .plots import check_plot_path


def train(
    cfg: TrainConfig,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    resume: bool = False,
    overwrite: bool = False,
    regularizers: Sequence[Regularizer] = (),
) -> list[dict]:
    """Train ``cfg.model`` on ``cfg.dataset`` with :func:`~mondeq.training.fit`; one metrics dict per epoch.

    The loss is the mean cross-entropy, or with ``cfg.certified_train`` the certified-training loss
    (:class:`~mondeq.robustness.CertifiedLoss`), plus every ``regularizers`` term (and, with
    ``cfg.lipschitz_reg = λ > 0``, ``λ`` times a NEMON's ℓ∞ Lipschitz bound on the pixel scale). With
    ``cfg.out``, the run's files (see :func:`~mondeq.training.fit`) and ``config.json``; with ``resume``,
    continues from ``cfg.out/checkpoint.pt`` if it was written with the same configuration (``epochs`` may
    grow under a step schedule); ``overwrite`` starts again in a ``cfg.out`` that holds a run. Under
    ``torchrun``, ``batch_size`` is global; rank 0 logs and writes.
    """
    with process_group(cfg.device) as (ranks, device):
        cfg.device = device
        cfg.validate()
        ranks.checked_on_main(lambda: check_out(cfg.out, resume, overwrite))  # before the data and the model
        if cfg.download and ranks.main:
            if cfg.data_dir is None:
                raise InputError("--download needs --data-dir, the folder to put the files in")
            download(cfg.dataset, cfg.data_dir)
        ranks.barrier()
        splits = load_dataset(cfg.dataset, cfg.data_dir, train_subset=cfg.train_subset,
                              test_subset=cfg.test_subset, subset_seed=cfg.subset_seed)
        torch.manual_seed(cfg.seed)
        model = build_from_config(cfg, splits).to(torch.device(cfg.device))
        if cfg.lipschitz_reg > 0:
            regularizers = [*regularizers, LipschitzPenalty(cfg.lipschitz_reg, splits.normalization)]
            regularizers[-1](model)  # a model without an ℓ∞ bound fails here, before any training
        loss: Objective = cross_entropy
        if cfg.certified_train is not None:
            certified = CertifiedLoss(cfg.certified_train, cfg.train_eps, splits.normalization, cfg.eps_warmup,
                                      cfg.eps_ramp, cfg.robust_mix)
            certified.check(model)
            loss = certified
        optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
        steps = -(-len(splits.train_labels) // cfg.batch_size)
        scheduler, per = SCHEDULES[cfg.schedule](optimizer, cfg, steps)
        if resume:
            _check_resume(cfg)
        augment = (functools.partial(_augment, pad=cfg.augment_pad, flip=cfg.augment_flip)
                   if cfg.augment_pad or cfg.augment_flip else None)
        n_params = sum(p.numel() for p in model.parameters())
        if ranks.main:
            log(f"{cfg.model} on {cfg.dataset}: {n_params:,} parameters, {len(splits.train_labels):,} training / "
                f"{len(splits.test_labels):,} test images, solver {solver_name(model)}")
        return fit(model, (splits.train_images, splits.train_labels), (splits.test_images, splits.test_labels),
                   epochs=cfg.epochs, optimizer=optimizer, scheduler=scheduler,
                   schedule_per=per, loss=loss,
                   regularizers=regularizers, prepare=splits.normalize, augment=augment,
                   batch_size=cfg.batch_size, test_batch_size=cfg.test_batch_size, seed=cfg.seed, out=cfg.out,
                   resume=resume, overwrite=overwrite, config=dataclasses.asdict(cfg), progress=progress, log=log,
                   autocast=torch.bfloat16 if cfg.bf16 else None)


def _augment(images: torch.Tensor, generator: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    return random_crop_flip(images, pad, flip, generator)


def _check_resume(cfg: TrainConfig) -> None:
    """A run resumes only with the configuration it was started with (``epochs`` may grow under a step
    schedule; ``out`` and ``device`` may differ)."""
    if cfg.out is None:
        raise InputError("--resume needs --out, the folder of the run to continue")
    ckpt = load_checkpoint(Path(cfg.out) / "checkpoint.pt")
    grow = {"epochs": cfg.epochs} if cfg.schedule == "step" else {}  # a one-cycle schedule is fixed
    saved = config_from_checkpoint(ckpt, **grow, out=cfg.out, device=cfg.device)
    changed = sorted(k for k, v in dataclasses.asdict(saved).items() if getattr(cfg, k) != v)
    if changed:
        raise InputError(f"--resume with a different configuration ({', '.join(changed)}); "
                         "continue with the options of the interrupted run")


def model_from_checkpoint(
    path: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    test_subset: int | None = None,
    device: str = "cpu",
    eval_tol: float | None = None,
    eval_max_iter: int | None = None,
) -> tuple[nn.Module, Splits, dict]:
    """A model saved by :func:`train` on ``device`` with the test split it is evaluated on (its own data set
    by default), its evaluation solver's tolerance and iteration limit overridden where given."""
    ckpt = load_checkpoint(path)
    overrides: dict[str, Any] = {"device": device, "test_subset": test_subset}
    for key, value in (("dataset", dataset), ("data_dir", data_dir), ("eval_tol", eval_tol),
                       ("eval_max_iter", eval_max_iter)):
        if value is not None:
            overrides[key] = value
    cfg = config_from_checkpoint(ckpt, **overrides)
    cfg.validate()
    splits = load_dataset(cfg.dataset, cfg.data_dir, train_subset=1, test_subset=cfg.test_subset,
                          subset_seed=cfg.subset_seed)
    model = build_from_config(cfg, splits)
    load_model_state(model, ckpt["model"], str(path))
    return model.to(torch.device(cfg.device)), splits, {**ckpt, "config": dataclasses.asdict(cfg)}


def evaluate_checkpoint(path: str | Path, **options: Any) -> dict:
    """Test accuracy, loss and solver iterations of a saved model (options: see :func:`model_from_checkpoint`)."""
    model, splits, ckpt = model_from_checkpoint(path, **options)
    cfg = ckpt["config"]
    result = evaluate(model, (splits.test_images, splits.test_labels), prepare=splits.normalize,
                      batch_size=cfg["test_batch_size"])
    return {"model": cfg["model"], "dataset": cfg["dataset"], "epoch": ckpt["epoch"], "n": len(splits.test_labels),
            "test_acc": result["test_acc"], "test_loss": result["test_loss"],
            "fwd_iters": result["test_fwd_iters"]}


def certify_checkpoint(
    path: str | Path,
    eps: Sequence[float],
    norm: str = "2",
    *,
    attack: bool = False,
    attack_steps: int = 20,
    restarts: int = 1,
    tol: float = 1e-5,
    max_iter: int = 5000,
    plot: str | Path | None = None,
    progress: bool = False,
    **options: Any,
) -> dict:
    """:func:`~mondeq.robustness.certify` of a saved model on its test split, its logits solved to ``tol``
    within ``max_iter`` iterations (a solve stopped early stays sound: its error bound is larger); ``plot``
    writes the PNG of :func:`~mondeq.robustness.plot_certify`. Options: see :func:`model_from_checkpoint`."""
    if not (tol > 0 and max_iter >= 1):
        raise InputError(f"certify needs tol > 0 and max_iter ≥ 1, got {tol:g}, {max_iter}")
    if plot is not None:
        check_plot_path(plot)  # before the work, not after it
    model, splits, ckpt = model_from_checkpoint(path, eval_tol=tol, eval_max_iter=max_iter, **options)
    result = certify(model, splits.test_images, splits.test_labels, splits.normalization, eps, norm,
                     batch_size=ckpt["config"]["test_batch_size"], attack=attack, attack_steps=attack_steps,
                     restarts=restarts, progress=progress)
    if plot is not None:
        plot_certify(result, plot)
    return result
