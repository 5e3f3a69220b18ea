"""The training loop for any classifier ``nn.Module``: data as tensors or loaders, a loss and regularisers,
callbacks, checkpoints and resume, metrics files and the run's figure, data-parallel under ``torchrun``."""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import ConvergenceWarning, InputError
from ..layers import EquilibriumLayer
from .checkpoints import load_checkpoint, load_model_state, save_atomic, write_text_atomic
from .distributed import Distributed
from .plots import plot_metrics

Data = tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]]
"""Images and labels: a pair of tensors (batched, and shuffled each epoch, by the loop), or an iterable of
``(images, labels)`` batches such as a ``DataLoader`` (taken as it comes)."""

Objective = Callable[[nn.Module, Tensor, Tensor, Tensor, float], Tensor]
"""The training loss ``loss(model, inputs, labels, logits, epochs_done)``: a mean over the batch.
``epochs_done`` (fractional) lets a loss follow a schedule, as :class:`~mondeq.robustness.CertifiedLoss`
ramps its radius; :func:`cross_entropy` is the default."""

Regularizer = Callable[[nn.Module], Tensor]
"""A term added to the training loss: a function of the model (e.g. :class:`~mondeq.robustness.LipschitzPenalty`)."""


def cross_entropy(model: nn.Module, inputs: Tensor, labels: Tensor, logits: Tensor, epochs_done: float) -> Tensor:
    """The mean cross-entropy of the logits (the default :data:`Objective`)."""
    return F.cross_entropy(logits, labels)


@dataclass(frozen=True)
class StepInfo:
    """What one training step saw: its epoch (from 1), step (from 0) of ``steps``, loss, logits and labels."""

    epoch: int
    step: int
    steps: int
    loss: float
    logits: Tensor
    labels: Tensor


class Callback:
    """Hooks into :func:`fit`; override either. ``on_epoch`` returning ``True`` ends the training after that
    epoch (its checkpoint and metrics are written first)."""

    def on_step(self, model: nn.Module, info: StepInfo) -> None:
        """After each optimiser step."""

    def on_epoch(self, model: nn.Module, metrics: dict[str, Any]) -> bool | None:
        """After each epoch's evaluation, with that epoch's metrics."""
        return None


def equilibrium_layers(model: nn.Module) -> list[EquilibriumLayer]:
    """The model's equilibrium layers, in module order."""
    return [m for m in model.modules() if isinstance(m, EquilibriumLayer)]


def solver_name(model: nn.Module) -> str:
    """The training solvers of the model's equilibrium layers."""
    return ", ".join(repr(layer.solver) for layer in equilibrium_layers(model)) or "none"


@dataclass
class _SolveTally:
    """Iterations of the forward and backward solves, and the solves that missed their tolerance."""

    fwd: float = 0.0
    bwd: float = 0.0
    interval_fwd: float = 0.0  # the embedded equilibria of certified training
    interval_bwd: float = 0.0
    solves: int = 0
    missed: int = 0
    worst: float = 0.0  # the largest final residual of a solve that missed its tolerance

    def add(self, model: nn.Module) -> None:
        """Count the solves of the model's last call and of its interval bound (with their backward passes, once
        they have run)."""
        for layer in equilibrium_layers(model):
            for rec, interval in ((layer.last_solve, False), (layer.last_interval_solve, True)):
                if rec is None:
                    continue
                fwd = rec.forward.iterations if rec.forward is not None else 0
                bwd = rec.backward.iterations if rec.backward is not None else 0
                if interval:
                    self.interval_fwd, self.interval_bwd = self.interval_fwd + fwd, self.interval_bwd + bwd
                else:
                    self.fwd, self.bwd = self.fwd + fwd, self.bwd + bwd
                for stats in (rec.forward, rec.backward):
                    if stats is not None:
                        self.solves += 1
                        if not stats.converged:
                            self.missed += 1
                            self.worst = max(self.worst, stats.max_residual)


@contextlib.contextmanager
def _tallied_warnings() -> Iterator[None]:
    """Solves that miss their tolerance are counted per epoch (:class:`_SolveTally`), not warned one by one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _identity(images: Tensor) -> Tensor:
    return images


def _check_data(data: Data, what: str) -> None:
    if isinstance(data, tuple):
        if len(data) != 2 or not all(isinstance(t, Tensor) for t in data) or len(data[0]) != len(data[1]):
            raise InputError(f"{what} must be (images, labels), two tensors of the same length, or a loader")
        if len(data[0]) == 0:
            raise InputError(f"{what} holds no images")


def _batches(data: Data, batch_size: int, order: Tensor | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Global batches of ``data``: slices of the tensors (in ``order`` if given), or the loader's batches."""
    if isinstance(data, tuple):
        images, labels = data
        n = len(labels)
        for i in range(0, n, batch_size):
            idx = slice(i, i + batch_size) if order is None else order[i : i + batch_size]
            yield images[idx], labels[idx]
    else:
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise InputError("a loader must yield (images, labels) batches")
            yield batch[0], batch[1]


def _num_batches(data: Data, batch_size: int) -> int:
    if isinstance(data, tuple):
        return math.ceil(len(data[1]) / batch_size)
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        raise InputError("a training loader must have a length (the number of batches in an epoch)") from None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Data,
    *,
    prepare: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 400,
    device: str | torch.device | None = None,
    ranks: Distributed | None = None,
) -> dict[str, float]:
    """Test loss, accuracy, mean forward iterations per batch and the solves that missed their tolerance.

    ``prepare`` maps a batch of images to the model's input (e.g. :meth:`~mondeq.data.Splits.normalize`);
    under ``torchrun`` each rank evaluates its share of every batch and the results are summed."""
    _check_data(data, "the evaluation data")
    ranks = ranks or Distributed.current()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    prepare = prepare or _identity
    model.eval()
    loss = correct = n = 0.0
    tally = _SolveTally()
    batches: float = 0  # a count, then the sum over the ranks
    with _tallied_warnings():
        for images, labels in _batches(data, batch_size):
            n += len(labels)
            x, y = ranks.shard(images), ranks.shard(labels).to(device)
            if len(y):
                logits = model(prepare(x.to(device)))
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                tally.add(model)
                batches += 1
    loss, correct, iters, batches, missed = ranks.sum([loss, correct, tally.fwd, batches, tally.missed])
    return {"test_loss": loss / n, "test_acc": correct / n, "test_fwd_iters": iters / max(batches, 1),
            "test_missed_solves": round(missed), "test_worst_residual": ranks.max(tally.worst)}


@torch.no_grad()
def residual_trace(model: nn.Module, inputs: Tensor) -> list[tuple]:
    """``(solver, iterations, residuals)`` of the forward solves of one batch, one entry per layer."""
    model.eval()
    with _tallied_warnings():
        model(inputs)
    traces = []
    for layer in equilibrium_layers(model):
        stats = layer.last_solve.forward if layer.last_solve else None
        if stats is not None:
            traces.append((stats.solver, list(stats.checked_at), list(stats.residual_trace)))
    return traces


def _quiet(_: str) -> None:
    pass


def check_out(out: str | Path | None, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work, ``resume`` with ``overwrite``, and a fresh run into an ``out`` that holds a
    checkpoint (unless ``overwrite``), in one line."""
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other: continue the run in --out, or start again")
    if out is not None and not resume and not overwrite and (Path(out) / "checkpoint.pt").exists():
        raise InputError(f"{out} holds a run already (checkpoint.pt): continue it with --resume (resume=True), "
                         "start it again with --overwrite (overwrite=True), or choose another --out")


def _prepare_out(out: str | Path | None, resume: bool, overwrite: bool) -> None:
    """:func:`check_out`, then make ``out``."""
    check_out(out, resume, overwrite)
    if out is not None:
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create the output folder {out}: {e.strerror or e}") from None


def fit(
    model: nn.Module,
    train: Data,
    test: Data | None = None,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    schedule_per: str = "epoch",
    loss: Objective = cross_entropy,
    regularizers: Sequence[Regularizer] = (),
    callbacks: Sequence[Callback] = (),
    prepare: Callable[[Tensor], Tensor] | None = None,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    batch_size: int = 128,
    test_batch_size: int = 400,
    seed: int = 0,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    config: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    autocast: torch.dtype | None = None,
) -> list[dict]:
    """Train ``model`` (any classifier ``nn.Module``, on its device) and return one metrics dict per epoch.

    Each step minimises ``loss`` (:data:`Objective`; the mean cross-entropy by default) plus every
    ``regularizers`` term. ``optimizer`` defaults to Adam at 10⁻³; ``scheduler`` is stepped once per epoch,
    or per batch with ``schedule_per="batch"``. Batches pass through ``augment(images, generator)`` (the
    generator is seeded per epoch), then ``prepare(images)`` (e.g. normalisation) before the model sees them.
    With tensors for ``train``, each epoch's order depends only on ``seed`` and the epoch.

    With ``out``, writes ``metrics.jsonl`` (one JSON object per epoch), ``checkpoint.pt`` (atomically, every
    epoch, with ``config``), ``config.json`` (when ``config`` is given) and ``metrics.png``. With ``resume``,
    continues from ``out/checkpoint.pt`` (the same model and optimiser; ``epochs`` may grow): a resumed run
    ends where an uninterrupted one does. Nothing in ``out`` is written before the first epoch ends, so a run
    that fails early leaves an earlier one's files as they were; a fresh run into a folder holding a checkpoint
    is refused unless ``overwrite``. Under ``torchrun`` (a joined process group) every process takes its
    share of each global batch and the model runs in ``DistributedDataParallel``; rank 0 logs and writes the
    files. With ``autocast`` (``torch.bfloat16``) each training forward runs under ``torch.autocast``: input
    maps and readouts in that precision, the equilibria in the parameters' (:func:`~mondeq.equilibrium`);
    the loss, the regularisers and evaluation stay in full precision.
    """
    if epochs < 1 or batch_size < 1 or test_batch_size < 1:
        raise InputError(f"epochs, batch_size and test_batch_size must be ≥ 1, got {epochs}, {batch_size}, "
                         f"{test_batch_size}")
    if schedule_per not in ("epoch", "batch"):
        raise InputError(f"schedule_per must be 'epoch' or 'batch', got {schedule_per!r}")
    _check_data(train, "the training data")
    if test is not None:
        _check_data(test, "the test data")
    ranks = Distributed.current()
    if not ranks.main:
        log, progress = _quiet, False
    device = next(model.parameters()).device
    prepare = prepare or _identity
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-3)
    out = Path(out) if out is not None else None
    history: list[dict] = []
    ranks.checked_on_main(lambda: _prepare_out(out, resume, overwrite))
    if resume:
        if out is None:
            raise InputError("resuming needs out, the folder of the run to continue")
        ckpt = load_checkpoint(out / "checkpoint.pt")
        load_model_state(model, ckpt["model"], str(out / "checkpoint.pt"))
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise InputError(f"{out / 'checkpoint.pt'} holds another optimiser's state: {e}") from None
        if scheduler is not None and ckpt["scheduler"] is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        history = list(ckpt["metrics"])
        log(f"resuming {out} after epoch {ckpt['epoch']}")
    engine = ranks.data_parallel(model)  # after a resume's load: every rank starts from rank 0's state
    if not ranks.main:
        out = None
    first_epoch = len(history) + 1  # nothing in out is written before this call's first epoch ends
    steps = _num_batches(train, batch_size)

    for epoch in range(first_epoch, epochs + 1):
        model.train()
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(train[1]), generator=gen) if isinstance(train, tuple) else None
        totals = {"loss": 0.0, "correct": 0, "n": 0}
        tally = _SolveTally()
        bar = tqdm(_batches(train, batch_size, order), total=steps, desc=f"epoch {epoch}/{epochs}", leave=False,
                   disable=None if progress else True)  # None: shown on a terminal, not in logs
        every = max(1, steps // 10)
        for step, (images, labels) in enumerate(bar):
            images = images.to(device)
            if augment is not None:  # on the global batch: every rank draws the same
                images = augment(images, gen)
            x, y = prepare(ranks.shard(images)), ranks.shard(labels).to(device)
            share = len(y) / len(labels) * ranks.world  # this rank's share of the global mean, DDP averages
            with _tallied_warnings():
                with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                    logits = engine(x).float()
                total = loss(model, x, y, logits, epoch - 1 + step / steps) * share
                for reg in regularizers:  # the same on every rank, and DDP averages
                    total = total + reg(model)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
            optimizer.step()
            if scheduler is not None and schedule_per == "batch":
                scheduler.step()
            fwd, bwd = tally.fwd, tally.bwd
            tally.add(model)
            value = float(total.detach()) / ranks.world  # this rank's part of the global loss
            totals["loss"] += value * len(labels)
            totals["correct"] += int((logits.argmax(1) == y).sum())
            totals["n"] += len(labels)
            for cb in callbacks:
                cb.on_step(model, StepInfo(epoch, step, steps, value, logits.detach(), y))
            bar.set_postfix(loss=f"{value:.3f}", fwd=int(tally.fwd - fwd), bwd=int(tally.bwd - bwd), refresh=False)
            if progress and bar.disable and (step + 1) % every == 0 and step + 1 < steps:  # a log, not a tty
                log(f"epoch {epoch:>3}/{epochs}  step {step + 1}/{steps}  "
                    f"train loss {ranks.world * totals['loss'] / totals['n']:.4f}  "
                    f"{time.perf_counter() - start:.0f} s")
        if scheduler is not None and schedule_per == "epoch":
            scheduler.step()
        train_time = time.perf_counter() - start
        loss_sum, correct, fwd_sum, bwd_sum, ifwd_sum, ibwd_sum, solves, missed = ranks.sum(
            [totals["loss"], totals["correct"], tally.fwd, tally.bwd, tally.interval_fwd, tally.interval_bwd,
             tally.solves, tally.missed]
        )
        n = totals["n"]
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": loss_sum / n,
            "train_acc": correct / n,
            "fwd_iters": fwd_sum / (steps * ranks.world),
            "bwd_iters": bwd_sum / (steps * ranks.world),
            **({"interval_fwd_iters": ifwd_sum / (steps * ranks.world),
                "interval_bwd_iters": ibwd_sum / (steps * ranks.world)} if ifwd_sum else {}),
            "missed_solves": round(missed),
            "worst_residual": ranks.max(tally.worst),
            **(evaluate(model, test, prepare=prepare, batch_size=test_batch_size, device=device, ranks=ranks)
               if test is not None else {}),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_time_s": train_time,
        }
        history.append(metrics)
        tested = f"  test acc {100 * metrics['test_acc']:.2f}%" if test is not None else ""
        interval = (f"interval fwd {metrics['interval_fwd_iters']:.1f} bwd {metrics['interval_bwd_iters']:.1f}  "
                    if ifwd_sum else "")
        log(f"epoch {epoch:>3}/{epochs}  train loss {metrics['train_loss']:.4f}  "
            f"train acc {100 * metrics['train_acc']:.2f}%{tested}  "
            f"iterations fwd {metrics['fwd_iters']:.1f} bwd {metrics['bwd_iters']:.1f}  {interval}"
            f"{metrics['epoch_time_s']:.1f} s")
        if metrics["missed_solves"] or metrics.get("test_missed_solves"):
            tols = "/".join(sorted({f"{layer.solver.tol:g}" for layer in equilibrium_layers(model)}))
            log(f"epoch {epoch:>3}/{epochs}  {metrics['missed_solves']} of {round(solves)} training solves missed "
                f"tol={tols} (worst residual {metrics['worst_residual']:.3g}), "
                f"{metrics.get('test_missed_solves', 0)} evaluation solves missed theirs "
                f"(worst {metrics.get('test_worst_residual', 0):.3g}); raise --max-iter, or lower --lr")
        if out is not None:
            save_atomic(  # first: the checkpoint is what a resume trusts, the rest follows from it
                {"config": config or {}, "epoch": epoch, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(),
                 "scheduler": None if scheduler is None else scheduler.state_dict(), "metrics": history},
                out / "checkpoint.pt",
            )
            if epoch == first_epoch:  # an overwritten run's config.json goes with it
                if config is not None:
                    write_text_atomic(json.dumps(config, indent=2) + "\n", out / "config.json")
                else:
                    (out / "config.json").unlink(missing_ok=True)
            write_text_atomic("".join(json.dumps(h) + "\n" for h in history), out / "metrics.jsonl")
        stop = any([bool(cb.on_epoch(model, metrics)) for cb in callbacks])  # every callback sees the epoch
        if out is not None and epoch < epochs and not stop:  # the residual panel costs solves: only at the end
            plot_metrics(history, out / "metrics.png")
        if stop:
            break
    if out is not None and len(history) >= first_epoch:  # not when a resumed run had nothing left to do
        first = next(_batches(test, test_batch_size), None) if test is not None else None
        traces = residual_trace(model, prepare(first[0].to(device))) if first is not None else []
        plot_metrics(history, out / "metrics.png", traces)
    return history
