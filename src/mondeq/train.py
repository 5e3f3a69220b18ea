"""Training and evaluation loops, checkpoints and metrics (the application layer)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data import Splits, download, load_dataset, random_crop_flip
from .errors import ConvergenceWarning, InputError
from .layers import EquilibriumLayer
from .models import build_model
from .normalization import Normalization
from .priors import PRIORS
from .robustness import CertifiedLoss, LipschitzPenalty
from .solvers import default_solver, make_solver


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
    hidden: int | None = None
    channels: int | list[int] | None = None
    m: float | None = None
    gamma: float | None = None
    prior: str | None = None
    prior_weight: float | None = None
    solver: str | None = None
    anderson: bool = False
    alpha: float | None = None
    tol: float = 1e-2
    max_iter: int = 300
    eval_tol: float | None = 1e-3
    eval_alpha: float | None = None
    eval_max_iter: int | None = None
    lipschitz_reg: float = 0.0
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
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"--optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.schedule not in ("step", "one-cycle"):
            raise InputError(f"--schedule must be step or one-cycle, got {self.schedule!r}")
        for name in ("eval_tol", "eval_alpha", "alpha"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
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
    for layer in _equilibrium_layers(model):
        name = cfg.solver or default_solver(layer.operator.guarantee_type)
        layer.solver = make_solver(name, anderson=cfg.anderson, **opts)
        if cfg.solver is not None:  # a solver of another family fails now, not at the first batch
            layer.solver.check(layer.operator.frozen(), layer.activation)
        layer.eval_solver = layer.solver.with_options(**changes) if changes else None
    return model


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run (``torchrun``); one process: rank 0 of 1."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, t: Tensor) -> Tensor:
        """This rank's share of a global batch."""
        return t[self.rank :: self.world]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.tolist()

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def reduce_gradients(self, model: nn.Module) -> None:
        """Sum the gradients of every rank (each rank's loss is its share of the global mean)."""
        if self.world > 1:
            for p in model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)

    def broadcast(self, model: nn.Module) -> None:
        if self.world > 1:
            for t in model.state_dict().values():
                dist.broadcast(t, 0)


@contextlib.contextmanager
def process_group(cfg: TrainConfig) -> Iterator[Distributed]:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, NCCL on GPUs) and
    leave it on exit: a process that ends still joined can abort while its gloo threads are torn down."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield Distributed()
        return
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
    if cfg.device == "cuda":
        cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    try:
        yield Distributed(dist.get_rank(), dist.get_world_size())
        dist.barrier()  # leave together: no rank closes its connections while another still writes
    finally:
        if joined:
            dist.destroy_process_group()


def _equilibrium_layers(model: nn.Module) -> list[EquilibriumLayer]:
    return [m for m in model.modules() if isinstance(m, EquilibriumLayer)]


@dataclass
class _SolveTally:
    """Iterations of the forward and backward solves, and the solves that missed their tolerance."""

    fwd: float = 0.0
    bwd: float = 0.0
    solves: int = 0
    missed: int = 0
    worst: float = 0.0  # the largest final residual of a solve that missed its tolerance

    def add(self, model: nn.Module) -> None:
        """Count the solves of the model's last call (and of its backward pass, once it has run)."""
        for layer in _equilibrium_layers(model):
            rec = layer.last_solve
            if rec is None:
                continue
            self.fwd += rec.forward.iterations if rec.forward is not None else 0
            self.bwd += rec.backward.iterations if rec.backward is not None else 0
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


@torch.no_grad()
def evaluate(
    model: nn.Module, splits: Splits, batch_size: int, device: torch.device, ranks: Distributed = Distributed()
) -> dict[str, float]:
    """Test loss, accuracy, mean forward iterations per batch and the solves that missed their tolerance
    (each rank evaluates its share)."""
    model.eval()
    loss = correct = 0.0
    tally = _SolveTally()
    n = len(splits.test_labels)
    batches = 0
    with _tallied_warnings():
        for i in range(0, n, batch_size):
            x = ranks.shard(splits.test_images[i : i + batch_size])
            y = ranks.shard(splits.test_labels[i : i + batch_size]).to(device)
            if len(y):
                logits = model(splits.normalize(x.to(device)))
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                tally.add(model)
                batches += 1
    loss, correct, iters, batches, missed = ranks.sum([loss, correct, tally.fwd, batches, tally.missed])
    return {"test_loss": loss / n, "test_acc": correct / n, "test_fwd_iters": iters / max(batches, 1),
            "test_missed_solves": round(missed), "test_worst_residual": ranks.max(tally.worst)}


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


CHECKPOINT_KEYS = ("config", "epoch", "model", "optimizer", "scheduler", "metrics")


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`train`; a missing, corrupt or foreign file raises
    :class:`InputError` (nothing is written)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise InputError(f"{path} is not a readable checkpoint (corrupt or truncated?): {type(e).__name__}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        raise InputError(f"{path} is not a mondeq training checkpoint")
    return ckpt


def config_from_checkpoint(ckpt: dict, **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` saved in a checkpoint, with ``overrides`` applied."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = ckpt["config"]
    if not isinstance(saved, dict) or set(saved) - fields:
        raise InputError("the checkpoint's configuration is not one this version of mondeq knows")
    return TrainConfig(**{**saved, **overrides})


def load_model_state(model: nn.Module, state: dict, what: str) -> None:
    """``load_state_dict`` with a one-line error when the state belongs to another model."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(f"{what} holds a different model than its configuration describes: {first}") from None


def _quiet(_: str) -> None:
    pass


Regularizer = Callable[[nn.Module], Tensor]
"""A term added to the training loss: a function of the model (e.g. :class:`~mondeq.robustness.LipschitzPenalty`)."""


def train(
    cfg: TrainConfig,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    resume: bool = False,
    regularizers: Sequence[Regularizer] = (),
) -> list[dict]:
    """Train ``cfg.model`` on ``cfg.dataset``; returns one metrics dict per epoch.

    Each step minimises the mean cross-entropy plus every ``regularizers`` term (and, with
    ``cfg.lipschitz_reg = λ > 0``, ``λ`` times a NEMON's ℓ∞ Lipschitz bound on the pixel scale).

    With ``cfg.out`` set, writes ``config.json``, ``metrics.jsonl`` (one JSON object per epoch),
    ``checkpoint.pt`` (atomically, every epoch) and ``metrics.png``. With ``resume``, continues from
    ``cfg.out/checkpoint.pt`` (same configuration, ``epochs`` may grow): the data order of each epoch depends
    only on the seed and the epoch, so a resumed run ends exactly where an uninterrupted one does.

    Under ``torchrun`` every process takes its share of each global batch (``batch_size`` is global) and
    the gradients are summed, so the run matches a single process's up to round-off; rank 0 logs and
    writes the files.
    """
    with process_group(cfg) as ranks:
        return _train(cfg, ranks, progress=progress, log=log, resume=resume, regularizers=regularizers)


def _train(
    cfg: TrainConfig,
    ranks: Distributed,
    *,
    progress: bool,
    log: Callable[[str], None],
    resume: bool,
    regularizers: Sequence[Regularizer],
) -> list[dict]:
    if not ranks.main:
        log = _quiet
        progress = False
    cfg.validate()
    device = torch.device(cfg.device)
    if cfg.download and ranks.main:
        if cfg.data_dir is None:
            raise InputError("--download needs --data-dir, the folder to put the files in")
        download(cfg.dataset, cfg.data_dir)
    if ranks.world > 1:
        dist.barrier()
    splits = load_dataset(
        cfg.dataset, cfg.data_dir, train_subset=cfg.train_subset, test_subset=cfg.test_subset,
        subset_seed=cfg.seed,
    )
    torch.manual_seed(cfg.seed)
    model = build_from_config(cfg, splits).to(device)
    if cfg.lipschitz_reg > 0:
        regularizers = [*regularizers, LipschitzPenalty(cfg.lipschitz_reg, splits.normalization)]
        regularizers[-1](model)  # a model without an ℓ∞ bound fails here, before any training
    certified = None
    if cfg.certified_train is not None:
        certified = CertifiedLoss(cfg.certified_train, cfg.train_eps, splits.normalization,
                                  cfg.eps_warmup, cfg.eps_ramp, cfg.robust_mix)
        certified.check(model)
    ranks.broadcast(model)
    optimizer: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.Adam(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type in ("cpu", "cuda")
        )
    n = len(splits.train_labels)
    steps = math.ceil(n / cfg.batch_size)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    if cfg.schedule == "one-cycle":  # stepped every batch
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=cfg.epochs * steps)
    elif cfg.lr_step:  # stepped every epoch
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step, cfg.lr_gamma)
    out = Path(cfg.out) if cfg.out else None
    history: list[dict] = []
    if resume:
        if out is None:
            raise InputError("--resume needs --out, the folder of the run to continue")
        ckpt = load_checkpoint(out / "checkpoint.pt")
        grow = {"epochs": cfg.epochs} if cfg.schedule == "step" else {}  # a one-cycle schedule is fixed
        saved = config_from_checkpoint(ckpt, **grow, out=cfg.out, device=cfg.device)
        changed = sorted(k for k, v in dataclasses.asdict(saved).items() if getattr(cfg, k) != v)
        if changed:
            raise InputError(f"--resume with a different configuration ({', '.join(changed)}); "
                             "continue with the options of the interrupted run")
        load_model_state(model, ckpt["model"], str(out / "checkpoint.pt"))
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt["scheduler"] is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        history = list(ckpt["metrics"])
        log(f"resuming {out} after epoch {ckpt['epoch']}")
    if not ranks.main:
        out = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        (out / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{cfg.model} on {cfg.dataset}: {n_params:,} parameters, {len(splits.train_labels):,} training / "
        f"{len(splits.test_labels):,} test images, solver {model_solver_name(model)}")

    for epoch in range(len(history) + 1, cfg.epochs + 1):
        model.train()
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen)
        totals = {"loss": 0.0, "correct": 0}
        tally = _SolveTally()
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=None if progress else True)  # None: shown on a terminal, not in logs
        every = max(1, steps // 10)
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            images = splits.train_images[idx].to(device)
            if cfg.augment_pad or cfg.augment_flip:  # on the global batch: every rank draws the same
                images = random_crop_flip(images, cfg.augment_pad, cfg.augment_flip, gen)
            x = splits.normalize(ranks.shard(images))
            y = ranks.shard(splits.train_labels[idx]).to(device)
            with _tallied_warnings():
                logits = model(x)
                if certified is None:
                    loss = F.cross_entropy(logits, y, reduction="sum") / len(idx)  # this rank's share of the mean
                else:
                    loss = certified(model, x, y, logits, epoch - 1 + step / steps) * (len(y) / len(idx))
                for reg in regularizers:  # summed over the ranks: each adds its share
                    loss = loss + reg(model) / ranks.world
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            ranks.reduce_gradients(model)
            optimizer.step()
            if cfg.schedule == "one-cycle" and scheduler is not None:
                scheduler.step()
            fwd, bwd = tally.fwd, tally.bwd
            tally.add(model)
            loss_value = float(loss.detach())
            totals["loss"] += loss_value * len(idx)
            totals["correct"] += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_value:.3f}", fwd=int(tally.fwd - fwd), bwd=int(tally.bwd - bwd),
                            refresh=False)
            if progress and bar.disable and (step + 1) % every == 0 and step + 1 < steps:  # a log, not a tty
                log(f"epoch {epoch:>3}/{cfg.epochs}  step {step + 1}/{steps}  "
                    f"train loss {ranks.world * totals['loss'] / ((step + 1) * len(idx)):.4f}  "
                    f"{time.perf_counter() - start:.0f} s")
        if cfg.schedule == "step" and scheduler is not None:
            scheduler.step()
        train_time = time.perf_counter() - start
        loss_sum, correct, fwd_sum, bwd_sum, solves, missed = ranks.sum(
            [totals["loss"], totals["correct"], tally.fwd, tally.bwd, tally.solves, tally.missed]
        )
        metrics = {
            "epoch": epoch,
            "train_loss": loss_sum / n,
            "train_acc": correct / n,
            "fwd_iters": fwd_sum / (steps * ranks.world),
            "bwd_iters": bwd_sum / (steps * ranks.world),
            "missed_solves": round(missed),
            "worst_residual": ranks.max(tally.worst),
            **evaluate(model, splits, cfg.test_batch_size, device, ranks),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_time_s": train_time,
        }
        history.append(metrics)
        log(f"epoch {epoch:>3}/{cfg.epochs}  train loss {metrics['train_loss']:.4f}  "
            f"train acc {100 * metrics['train_acc']:.2f}%  test acc {100 * metrics['test_acc']:.2f}%  "
            f"iterations fwd {metrics['fwd_iters']:.1f} bwd {metrics['bwd_iters']:.1f}  "
            f"{metrics['epoch_time_s']:.1f} s")
        if metrics["missed_solves"] or metrics["test_missed_solves"]:
            log(f"epoch {epoch:>3}/{cfg.epochs}  {metrics['missed_solves']} of {round(solves)} training solves "
                f"missed tol={cfg.tol:g} (worst residual {metrics['worst_residual']:.3g}), "
                f"{metrics['test_missed_solves']} evaluation solves missed theirs "
                f"(worst {metrics['test_worst_residual']:.3g}); raise --max-iter, or lower --lr")
        if out is not None:
            with (out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(metrics) + "\n")
            save_atomic(
                {"config": dataclasses.asdict(cfg), "epoch": epoch, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(),
                 "scheduler": None if scheduler is None else scheduler.state_dict(), "metrics": history},
                out / "checkpoint.pt",
            )
            if epoch < cfg.epochs:  # the residual panel costs solves: only at the end
                plot_metrics(history, out / "metrics.png")
    if out is not None and history:
        plot_metrics(history, out / "metrics.png", residual_trace(model, splits, cfg.test_batch_size, device))
    return history


@torch.no_grad()
def residual_trace(model: nn.Module, splits: Splits, batch_size: int, device: torch.device) -> list[tuple]:
    """``(iteration, residual)`` of the forward solves of the first evaluation batch, one list per layer."""
    model.eval()
    with _tallied_warnings():
        model(splits.normalize(splits.test_images[:batch_size].to(device)))
    traces = []
    for layer in _equilibrium_layers(model):
        stats = layer.last_solve.forward if layer.last_solve else None
        if stats is not None:
            traces.append((stats.solver, list(stats.checked_at), list(stats.residual_trace)))
    return traces


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
    """A saved model on ``device`` with the test split it is evaluated on (its own data set by default), its
    evaluation solver's tolerance and iteration limit overridden where given."""
    ckpt = load_checkpoint(path)
    overrides: dict[str, Any] = {"device": device, "test_subset": test_subset}
    for key, value in (("dataset", dataset), ("data_dir", data_dir), ("eval_tol", eval_tol),
                       ("eval_max_iter", eval_max_iter)):
        if value is not None:
            overrides[key] = value
    cfg = config_from_checkpoint(ckpt, **overrides)
    cfg.validate()
    splits = load_dataset(cfg.dataset, cfg.data_dir, train_subset=1, test_subset=cfg.test_subset,
                          subset_seed=cfg.seed)
    model = build_from_config(cfg, splits)
    load_model_state(model, ckpt["model"], str(path))
    return model.to(torch.device(cfg.device)), splits, {**ckpt, "config": dataclasses.asdict(cfg)}


def evaluate_checkpoint(path: str | Path, **options: Any) -> dict:
    """Test accuracy, loss and solver iterations of a saved model (options: see :func:`model_from_checkpoint`)."""
    model, splits, ckpt = model_from_checkpoint(path, **options)
    cfg = ckpt["config"]
    device = next(model.parameters()).device
    result = evaluate(model, splits, cfg["test_batch_size"], device)
    return {"model": cfg["model"], "dataset": cfg["dataset"], "epoch": ckpt["epoch"], "n": len(splits.test_labels),
            "test_acc": result["test_acc"], "test_loss": result["test_loss"],
            "fwd_iters": result["test_fwd_iters"]}


def model_solver_name(model: nn.Module) -> str:
    layers = _equilibrium_layers(model)
    return ", ".join(repr(layer.solver) for layer in layers)


def plot_metrics(history: list[dict], path: Path, traces: list[tuple] = ()) -> None:
    """Accuracy, loss and solver iterations per epoch, and the residual of one evaluation solve (``traces``),
    as one PNG, replaced atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.6))
    axes[0].plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    axes[0].plot(epochs, [100 * h["test_acc"] for h in history], "o-", label="test")
    axes[0].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    axes[1].plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    axes[1].plot(epochs, [h["test_loss"] for h in history], "o-", label="test")
    axes[1].set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    axes[2].plot(epochs, [h["fwd_iters"] for h in history], "o-", label="forward")
    axes[2].plot(epochs, [h["bwd_iters"] for h in history], "o-", label="backward")
    axes[2].set(xlabel="epoch", ylabel="iterations per batch", title="solver iterations")
    axes[3].plot(epochs, [h.get("missed_solves", 0) for h in history], "o-", label="training")
    axes[3].plot(epochs, [h.get("test_missed_solves", 0) for h in history], "o-", label="evaluation")
    axes[3].set(xlabel="epoch", ylabel="solves per epoch", title="solves that missed their tolerance")
    axes[3].set_ylim(bottom=0)
    for solver, its, res in traces:
        axes[4].plot(its, res, "o-", label=solver)
    axes[4].set(xlabel="iteration", ylabel="max relative residual", title="residual, one test batch", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)  # a run stopped while plotting keeps the previous figure


