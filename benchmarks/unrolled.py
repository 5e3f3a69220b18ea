"""The implicit gradient against backpropagation through unrolled iterations, in one run: memory kept for
the backward pass and time of a training pass (forward and backward), for the same models and batch.

The implicit pass is the library's: Peaceman–Rachford to the training tolerance forward and backward,
through an operator rebuilt as after an optimiser step. The unrolled pass is what a user without implicit
gradients writes: ``K`` forward–backward steps ``z ← σ((1 − α)z + α(W(θ)z + y))`` at the safe step
``α = m/L²``, with autograd recording every one (Peaceman–Rachford cannot be unrolled without a
differentiable resolvent). Memory is the bytes of the distinct tensors autograd saves for the backward
(``torch.autograd.graph.saved_tensors_hooks``), which is what grows with ``K``, plus, for the implicit pass,
the frozen operator it keeps for its adjoint solve (its matrices and resolvent); parameters and inputs,
which both passes hold, are not counted. Timings alternate between the variants.

    python benchmarks/unrolled.py [--models fc,conv] [--iterations 10,30] [--batch-size 128] [--tol 1e-2] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import warnings

import torch
from torch import Tensor, nn

from mondeq.bench import SavedBytes, alternating_medians, single_layer, training_pass
from mondeq.models import build_model
from mondeq.solvers import PeacemanRachford


def _unrolled(layer: nn.Module, steps: int) -> None:
    """Replace the layer's forward by ``steps`` forward–backward iterations that autograd records."""
    frozen = layer.operator.frozen()
    alpha = frozen.m / frozen.lipschitz**2

    def forward(x: Tensor) -> Tensor:
        y = layer.input_map(x)
        z = torch.zeros_like(y)
        for _ in range(steps):
            z = layer.activation.prox(torch.lerp(z, layer.operator(z) + y, alpha), alpha)
        return z

    layer.forward = forward


def measure(name: str, iterations: list[int], batch_size: int, reps: int, tol: float) -> dict:
    torch.manual_seed(0)
    variants: dict[str, nn.Module] = {"implicit": build_model(name, (1, 28, 28), 10)}
    single_layer(variants["implicit"]).solver = PeacemanRachford(tol=tol)
    for k in iterations:
        torch.manual_seed(0)
        variants[f"unrolled {k}"] = build_model(name, (1, 28, 28), 10)
        _unrolled(single_layer(variants[f"unrolled {k}"]), k)
    x = torch.randn(batch_size, 1, 28, 28)
    labels = torch.randint(0, 10, (batch_size,))
    out: dict = {"model": name, "batch_size": batch_size}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v, model in variants.items():
            counter = SavedBytes([x, *model.parameters()])
            training_pass(model, x, labels, counter)
            if v == "implicit":
                counter.add_object(single_layer(model).operator.frozen())
            out[v] = {"saved_mb": counter.total / 2**20}
        implicit = single_layer(variants["implicit"]).last_solve
        assert implicit is not None and implicit.forward is not None and implicit.backward is not None
        out["implicit"]["iterations"] = implicit.forward.iterations + implicit.backward.iterations
        times = alternating_medians({v: functools.partial(training_pass, m, x, labels) for v, m in variants.items()},
                                    reps)
    for v in variants:
        out[v]["pass_s"] = times[v]
        out[v]["memory_ratio"] = out[v]["saved_mb"] / out["implicit"]["saved_mb"]
        out[v]["time_ratio"] = out[v]["pass_s"] / out["implicit"]["pass_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="fc,conv")
    p.add_argument("--iterations", default="10,30")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--tol", type=float, default=1e-2, help="the implicit pass's tolerance (default 1e-2)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    results = [measure(m, [int(k) for k in args.iterations.split(",")], args.batch_size, args.reps, args.tol)
               for m in args.models.split(",")]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("| model | gradient | saved for backward | ratio | pass time | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        for v, row in r.items():
            if isinstance(row, dict):
                label = v if v != "implicit" else f"implicit ({row['iterations']} iterations fwd + bwd)"
                print(f"| {r['model']} | {label} | {row['saved_mb']:.2f} MB | {row['memory_ratio']:.1f} | "
                      f"{1e3 * row['pass_s']:.1f} ms | {row['time_ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
