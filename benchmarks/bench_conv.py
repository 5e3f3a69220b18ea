"""Benchmark of the convolutional models: single convolution and multi-tier, MNIST and CIFAR-10 sizes.

For each model (batch 128, float32, random weights of the paper's size and real-looking inputs): the time
to build the FFT resolvent (once per parameter update), forward and backward solves with
Peaceman–Rachford and forward–backward at the paper's training tolerance, a whole training step, the
share of the resolvent in it, and the peak memory of the process (each model in its own process).

    python benchmarks/bench_conv.py [--models mnist-conv,...] [--batch 128] [--reps 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F

import mondeq

MODELS = {
    "mnist-conv": ("conv", (1, 28, 28)),
    "mnist-multitier": ("multitier", (1, 28, 28)),
    "cifar10-conv": ("conv", (3, 32, 32)),
    "cifar10-multitier": ("multitier", (3, 32, 32)),
}


def timed(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(name: str, batch: int, reps: int, tol: float) -> dict:
    kind, shape = MODELS[name]
    torch.manual_seed(0)
    model = mondeq.build_model(kind, shape, 10, solver=mondeq.PeacemanRachford(tol=tol))
    x = torch.randn(batch, *shape)
    labels = torch.randint(0, 10, (batch,))
    layer = model.mon
    op_module = layer.operator
    params = sum(p.numel() for p in model.parameters())

    def build() -> None:
        op_module._cache = None
        op_module.frozen().resolvent(1.0)

    t_build = timed(build, reps)
    x_in = F.pad(x, (model.pad,) * 4) if model.pad else x
    y = layer.input_map(x_in).detach()
    op = op_module.frozen()
    g = torch.randn_like(y) / batch
    out = {"model": name, "parameters": params, "resolvent_build_s": t_build}
    back = mondeq.ImplicitBackward()
    for sname, solver in (("pr", mondeq.PeacemanRachford(tol=tol)),
                          ("fb", mondeq.ForwardBackward(tol=tol, max_iter=2000))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fwd = solver.solve(op, layer.activation, y)
            d = layer.activation.derivative(fwd.pre_activation)
            _, bstats = back.adjoint(op, d, g, solver)
            t_f = timed(lambda solver=solver: solver.solve(op, layer.activation, y), reps)
            t_b = timed(lambda solver=solver, d=d: back.adjoint(op, d, g, solver), reps)
        out[sname] = {"fwd_iters": fwd.stats.iterations, "bwd_iters": bstats.iterations,
                      "fwd_s": t_f, "bwd_s": t_b}

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    out["train_step_s"] = timed(step, reps)
    out["resolvent_share"] = t_build / out["train_step_s"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch, args.reps, args.tol)))
        return
    rows = []
    for name in args.models.split(","):
        if name not in MODELS:
            sys.exit(f"bench_conv: unknown model {name!r}; choose from {', '.join(MODELS)}")
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--batch", str(args.batch),
                               "--reps", str(args.reps), "--tol", str(args.tol)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name:<18} {r['parameters']:>9,} params  resolvent build {1e3 * r['resolvent_build_s']:7.1f} ms "
              f"({100 * r['resolvent_share']:.1f}% of a step)  training step {r['train_step_s']:.3f} s  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        pr, fb = r["pr"], r["fb"]
        print(f"{'':<18} pr: fwd {pr['fwd_iters']} it {pr['fwd_s']:.3f} s, bwd {pr['bwd_iters']} it "
              f"{pr['bwd_s']:.3f} s | fb: fwd {fb['fwd_iters']} it {fb['fwd_s']:.3f} s "
              f"({fb['fwd_s'] / pr['fwd_s']:.1f}× pr), bwd {fb['bwd_iters']} it {fb['bwd_s']:.3f} s "
              f"({fb['bwd_s'] / pr['bwd_s']:.1f}× pr)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
