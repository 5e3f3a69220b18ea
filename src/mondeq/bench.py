"""Speed and iteration measurements of a model's solvers (``mondeq bench``, ``benchmarks/``).

Every figure of one call is measured in the same process, so that ratios between solvers are meaningful on
a shared, noisy machine; times are the smallest of a few medians.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError
from .implicit import ImplicitBackward
from .layers import EquilibriumLayer
from .solvers import Anderson, Average, DouglasRachford, ForwardBackward, PeacemanRachford, Solver


def best_median(fn: Callable[[], Any], reps: int, rounds: int = 3) -> float:
    """The smallest of ``rounds`` medians of ``reps`` timed calls (after one warm-up call), in seconds."""
    fn()
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        medians.append(statistics.median(times))
    return min(medians)


def single_layer(model: nn.Module) -> EquilibriumLayer:
    """The model's one equilibrium layer (:class:`~mondeq.errors.InputError` for none or several)."""
    layers = [m for m in model.modules() if isinstance(m, EquilibriumLayer)]
    if len(layers) != 1:
        raise InputError(f"a benchmark needs a model with exactly one equilibrium layer, this one has {len(layers)}")
    return layers[0]


def equilibrium_input(model: nn.Module, x: Tensor) -> tuple[EquilibriumLayer, Tensor]:
    """The model's equilibrium layer and ``y = Ux + b`` for the batch ``x`` (read by running the model once)."""
    layer, seen, training = single_layer(model), [], model.training
    handle = layer.input_map.register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.eval()(x)
    finally:
        handle.remove()
        model.train(training)
    return layer, seen[0]


def default_solvers(tol: float) -> dict[str, Solver]:
    """Plain and Anderson-accelerated Peaceman–Rachford, Douglas–Rachford, forward–backward and the average
    iteration."""
    base: dict[str, Solver] = {
        "pr": PeacemanRachford(tol=tol),
        "dr": DouglasRachford(tol=tol, max_iter=1000),
        "fb": ForwardBackward(tol=tol, max_iter=3000),
        "avg": Average(tol=tol, max_iter=3000),
    }
    return {**base, **{k + "+anderson": Anderson(s) for k, s in base.items()}}  # type: ignore[arg-type]


def family_solvers(solvers: dict[str, Solver], layer: EquilibriumLayer) -> list[str]:
    """The names of ``solvers`` that have a proof for the layer's operator and activation."""
    guarantee = layer.operator.frozen().guarantee
    return [name for name, s in solvers.items() if s.refusal(guarantee, layer.activation) is None]


def solver_table(model: nn.Module, x: Tensor, solvers: dict[str, Solver], reps: int) -> dict[str, dict]:
    """Forward and backward iterations and times per solver, with time ratios to the first solver."""
    layer, y = equilibrium_input(model, x)
    op, act = layer.operator.frozen(), layer.activation
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype).to(y.device) / len(y)
    back, rows = ImplicitBackward(), {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, solver in solvers.items():
            fwd = solver.solve(op, act, y)
            d = act.derivative(fwd.pre_activation)
            _, bstats = back.adjoint(op, d, g, solver)
            rows[name] = {
                "fwd_iters": fwd.stats.iterations,
                "bwd_iters": bstats.iterations if bstats else 0,
                "fwd_s": best_median(cast(Callable[[], Any], lambda s=solver: s.solve(op, act, y)), reps),
                "bwd_s": best_median(cast(Callable[[], Any], lambda s=solver, d=d: back.adjoint(op, d, g, s)), reps),
            }
    first = next(iter(rows.values()))
    for r in rows.values():
        r["fwd_ratio"], r["bwd_ratio"] = r["fwd_s"] / first["fwd_s"], r["bwd_s"] / first["bwd_s"]
    return rows


def training_step(model: nn.Module, x: Tensor, labels: Tensor, reps: int) -> dict[str, float]:
    """A whole training step (forward, backward, Adam update, and the refactorisation it causes), the
    forward and backward passes alone, the time to build what the solver needs after an update (the
    operator and its resolvent, or its norm for forward–backward), and the bare cost of one product
    ``σ(Wz + y)``, with the passes' time as a multiple of one product per iteration they ran."""
    layer, y = equilibrium_input(model, x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-6, fused=x.device.type in ("cpu", "cuda"))
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def step() -> None:
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def passes() -> None:
        F.cross_entropy(model(x), labels).backward()

    def build() -> None:
        layer.operator._cache = None
        layer.solver.iteration(layer.operator.frozen(), layer.activation, y[:1])

    def product() -> None:  # the bare cost of one iteration's product and activation
        with torch.no_grad():
            layer.activation(layer.operator.frozen().W(y, add=y))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {"step_s": best_median(step, reps), "passes_s": best_median(passes, reps)}
        rec = layer.last_solve
        out["build_s"] = best_median(build, reps)
        out["product_s"] = best_median(product, reps)
    model.load_state_dict(state)
    out["fwd_iters"] = rec.forward.iterations if rec and rec.forward else 0
    out["bwd_iters"] = rec.backward.iterations if rec and rec.backward else 0
    out["build_share"] = out["build_s"] / out["step_s"]
    # forward + backward passes against as many bare products as their iterations
    out["passes_per_product"] = out["passes_s"] / (out["product_s"] * max(1, out["fwd_iters"] + out["bwd_iters"]))
    return out


class SavedBytes:
    """The bytes of distinct tensor storages, except ``exclude``'s: ``pack`` is a saved-tensors hook
    (``torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t)`` counts what autograd keeps for
    the backward), ``add_object`` adds the tensors an object holds (e.g. a frozen operator's resolvent)."""

    def __init__(self, exclude: list[Tensor]) -> None:
        self.seen: dict[int, int] = {}
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}

    def add(self, t: Tensor) -> None:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.exclude:
            self.seen[storage.data_ptr()] = storage.nbytes()

    def pack(self, t: Tensor) -> Tensor:
        self.add(t)
        return t

    def add_object(self, obj: object, depth: int = 4) -> None:
        """The tensors ``obj`` holds in its attributes, dicts, lists and tuples, ``depth`` levels down."""
        if isinstance(obj, Tensor):
            self.add(obj)
        elif depth and isinstance(obj, dict):
            for v in obj.values():
                self.add_object(v, depth - 1)
        elif depth and isinstance(obj, (list, tuple)):
            for v in obj:
                self.add_object(v, depth - 1)
        elif depth and hasattr(obj, "__dict__") and not isinstance(obj, type):
            self.add_object(vars(obj), depth - 1)

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def training_pass(model: nn.Module, x: Tensor, labels: Tensor, counter: SavedBytes | None = None) -> float:
    """The seconds of one forward and backward pass of the cross-entropy from parameters just moved (every
    equilibrium layer's frozen operator rebuilt, as after an optimiser step); with ``counter``, the tensors
    autograd saves for the backward are counted in it."""
    for layer in model.modules():
        if isinstance(layer, EquilibriumLayer):
            layer.operator._cache = None
    model.zero_grad(set_to_none=True)
    hooks = (torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t) if counter is not None
             else contextlib.nullcontext())
    t = time.perf_counter()
    with hooks:
        loss = F.cross_entropy(model(x), labels)
    loss.backward()
    return time.perf_counter() - t


def alternating_medians(passes: dict[str, Callable[[], float]], reps: int) -> dict[str, float]:
    """The median of ``reps`` results of each timed pass, run in turns whose order reverses every round
    (A B, B A, …), so that drift on a shared machine falls on all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in passes}
    for r in range(reps):
        for k in (list(passes) if r % 2 == 0 else list(passes)[::-1]):
            times[k].append(passes[k]())
    return {k: statistics.median(v) for k, v in times.items()}


def peak_rss_mb() -> float | None:
    """The process's peak resident memory in MB (``None`` where the platform does not say)."""
    try:
        import resource
    except ImportError:
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def bench(
    model: nn.Module, x: Tensor, labels: Tensor, *, tol: float = 1e-4, solvers: list[str] | None = None,
    reps: int = 10,
) -> dict[str, Any]:
    """Benchmark any classifier ``nn.Module`` with one equilibrium layer on the batch ``(x, labels)``: the
    :func:`solver_table` at ``tol`` for ``solvers`` (names of :func:`default_solvers`; default every one with
    a proof for its operator), its :func:`training_step` in training mode with the layer's own solver, and the
    peak RSS (``peak_rss_mb``; on CUDA also ``cuda_peak_mb``); the model's mode, weights and gradients are left as
    they were. Solvers the operator has no proof for are refused."""
    if reps < 1:
        raise InputError(f"reps must be ≥ 1, got {reps}")
    layer = single_layer(model)
    known = default_solvers(tol)
    names = solvers if solvers is not None else family_solvers(known, layer)
    unknown = [s for s in names if s not in known]
    if unknown or not names:
        raise InputError(f"unknown solver(s) {unknown}; choose from {', '.join(known)}")
    for s in names:
        known[s].check(layer.operator.frozen(), layer.activation)
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
    training, grads = model.training, [p.grad for p in model.parameters()]
    try:
        model.train()  # the step in training mode (its solver, not an eval_solver; dropout and batch norm on)
        rows = solver_table(model, x, {k: known[k] for k in names}, reps)
        step = training_step(model, x, labels, reps)
    finally:  # the model as it was given: its mode and gradients (training_step restores the weights)
        model.train(training)
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g
    out = {"batch_size": len(x), "tol": tol, "solvers": rows, "training_step": step,
           "training_solver": layer.solver.name, "peak_rss_mb": peak_rss_mb()}
    if x.device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(x.device) / 2**20
    return out


def bench_model(
    model: str = "fc",
    dataset: str = "mnist-mini",
    *,
    batch_size: int = 128,
    tol: float = 1e-4,
    train_tol: float = 1e-2,
    solvers: list[str] | None = None,
    reps: int = 10,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """``mondeq bench``: :func:`bench` of the registry ``model`` on a batch of ``dataset`` (real images for
    mnist-mini, else Gaussian inputs of its shape), its training step at ``train_tol`` with the family's
    default solver; unknown names are refused."""
    from .data import DATASETS, load_dataset
    from .models import build_model
    from .solvers import default_solver, make_solver
    from .training import TrainConfig

    TrainConfig(device=device, batch_size=batch_size, tol=tol).validate()
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    torch.manual_seed(seed)
    info, dev = DATASETS[dataset], torch.device(device)
    net = build_model(model, info.input_shape, info.num_classes).to(dev)
    layer = single_layer(net)
    layer.solver = make_solver(default_solver(layer.operator.guarantee_type), tol=train_tol)
    if dataset == "mnist-mini":
        splits = load_dataset("mnist-mini", test_subset=batch_size, subset_seed=seed)
        x, labels = splits.normalize(splits.test_images).to(dev), splits.test_labels.to(dev)
    else:
        x = torch.randn(batch_size, *info.input_shape, device=dev)
        labels = torch.randint(0, info.num_classes, (batch_size,), device=dev)
    return {"model": model, "dataset": dataset, **bench(net, x, labels, tol=tol, solvers=solvers, reps=reps)}
