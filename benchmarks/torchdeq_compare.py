"""mondeq against TorchDEQ (``pip install torchdeq``, an optional benchmark dependency) on the same
equilibrium, in one run: iterations, residual reached, time of a training pass and memory saved for backward.

Both solve ``z = σ(Wz + Ux + b)`` (σ the model's activation: ReLU, or for conv the ReLU that zeroes a border)
for the same monotone ``W``, input map and readout, from the same parameters and batch, to the same relative
tolerance: mondeq with Peaceman–Rachford and its exact implicit gradient, TorchDEQ as a generic DEQ layer
would use it, Anderson acceleration forward and backward with implicit differentiation (``get_deq(ift=True,
f_solver="anderson", b_solver="anderson", f_stop_mode="rel")``), ``W``'s products in space (a matrix product,
or the three convolutions of the parameterisation) built once per pass. The residual reported for both is
mondeq's, ``max ‖z − σ(Wz + y)‖ / ‖z‖`` over the batch, measured after the solve. Passes alternate
(A B B A …).

    python benchmarks/torchdeq_compare.py [--models fc,conv] [--tol 1e-2] [--batch-size 128] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mondeq.bench import SavedBytes, alternating_medians, single_layer, training_pass
from mondeq.data import load_dataset
from mondeq.models import build_model
from mondeq.operators.conv import ConvMonotone, conv_operator
from mondeq.operators.dense import DenseMonotone
from mondeq.operators.spectral import conv_transpose_kernel
from mondeq.solvers import PeacemanRachford


def _product(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """``z ↦ Wz``, differentiable in the parameters, with ``W`` (or its kernels) built once."""
    op = layer.operator
    tensors = op.tensors()
    if isinstance(op, DenseMonotone):
        w = op.weight(tensors)
        return lambda z: z @ w.T
    if isinstance(op, ConvMonotone):
        a, skew = op.kernels(tensors)
        at = conv_transpose_kernel(a)
        return lambda z: conv_operator(z, a, at, skew, op.m)
    raise SystemExit(f"no spatial product for {type(op).__name__}")


def _generic(layer: nn.Module, tol: float, max_iter: int, info: dict) -> None:
    """Replace the layer's forward by a TorchDEQ layer on the same equilibrium."""
    from torchdeq import get_deq

    deq = get_deq(ift=True, f_solver="anderson", b_solver="anderson", f_max_iter=max_iter, b_max_iter=max_iter,
                  f_tol=tol, b_tol=tol, f_stop_mode="rel", b_stop_mode="rel")

    def forward(x: Tensor) -> Tensor:
        y = layer.input_map(x)
        w = _product(layer)
        act = layer.activation
        zs, stats = deq(lambda z: act.prox(w(z) + y, 1.0), torch.zeros_like(y),
                        backward_writer=lambda b: info.update(backward=b))
        info.update(stats)
        return zs[-1]

    layer.forward = forward


def _residual(layer: nn.Module, x: Tensor, z: Tensor) -> float:
    with torch.no_grad():
        y = layer.input_map(x)
        fz = layer.activation.prox(layer.operator.frozen().W(z, add=y), 1.0)
        return float(((z - fz).flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1).clamp_min(1e-12)).max())


def _traced_pass(model: nn.Module, x: Tensor, labels: Tensor, counter: SavedBytes) -> tuple[Tensor, Tensor]:
    """A counted training pass; the equilibrium layer's input and output."""
    layer = single_layer(model)
    seen: list[tuple[Tensor, Tensor]] = []
    handle = layer.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].detach(), out.detach())))
    training_pass(model, x, labels, counter)
    handle.remove()
    return seen[0]


def measure(name: str, tol: float, batch_size: int, reps: int, max_iter: int) -> dict:
    splits = load_dataset("mnist-mini", test_subset=batch_size)
    x, labels = splits.normalize(splits.test_images), splits.test_labels
    models, info = {}, {}
    for v in ("mondeq", "torchdeq"):
        torch.manual_seed(0)
        models[v] = build_model(name, (1, 28, 28), 10)
    single_layer(models["mondeq"]).solver = PeacemanRachford(tol=tol, max_iter=max_iter)
    _generic(single_layer(models["torchdeq"]), tol, max_iter, info)
    out: dict = {"model": name, "tol": tol, "batch_size": batch_size}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v, model in models.items():
            counter = SavedBytes([x, *model.parameters()])
            inp, z = _traced_pass(model, x, labels, counter)
            layer = single_layer(model)
            if v == "mondeq":
                counter.add_object(layer.operator.frozen())
                rec = layer.last_solve
                assert rec is not None and rec.forward is not None and rec.backward is not None
                fwd, bwd = rec.forward.iterations, rec.backward.iterations
            else:
                fwd, bwd = float(info["nstep"].float().mean()), float(info["backward"]["nstep"].float().mean())
            out[v] = {"saved_mb": counter.total / 2**20, "fwd_iters": fwd, "bwd_iters": bwd,
                      "residual": _residual(layer, inp, z)}
        times = alternating_medians({v: functools.partial(training_pass, m, x, labels) for v, m in models.items()},
                                    reps)
    for v in models:
        out[v]["pass_s"] = times[v]
        out[v]["time_ratio"] = out[v]["pass_s"] / out["mondeq"]["pass_s"]
        out[v]["memory_ratio"] = out[v]["saved_mb"] / out["mondeq"]["saved_mb"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="fc,conv")
    p.add_argument("--tol", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-iter", type=int, default=300)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    results = [measure(m, args.tol, args.batch_size, args.reps, args.max_iter) for m in args.models.split(",")]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("| model | library | iterations fwd / bwd | residual | saved for backward | pass time | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        for v in ("mondeq", "torchdeq"):
            o = r[v]
            print(f"| {r['model']} | {v} | {o['fwd_iters']:.1f} / {o['bwd_iters']:.1f} | {o['residual']:.2g} | "
                  f"{o['saved_mb']:.2f} MB | {1e3 * o['pass_s']:.1f} ms | {o['time_ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
