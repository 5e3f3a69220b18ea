"""Benchmark of the convolutional models: single convolution and multi-tier, MNIST and CIFAR-10 sizes.

Each model runs `mondeq bench` in its own process (batch 128, float32, the paper's sizes, tolerance 1e-2
as in the paper's training) so that its peak memory can be read: forward and backward solves with
Peaceman–Rachford and forward–backward, a whole training step, and the time to rebuild the FFT resolvent
after a parameter update with its share of the step.

    python benchmarks/bench_conv.py [--models mnist-conv,...] [--reps 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

MODELS = {
    "mnist-conv": ("conv", "mnist"),
    "mnist-multitier": ("multitier", "mnist"),
    "cifar10-conv": ("conv", "cifar10"),
    "cifar10-multitier": ("multitier", "cifar10"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        if name not in MODELS:
            sys.exit(f"bench_conv: unknown model {name!r}; choose from {', '.join(MODELS)}")
        model, dataset = MODELS[name]
        cmd = [sys.executable, "-m", "mondeq.cli", "bench", "--model", model, "--dataset", dataset, "--json",
               "--solvers", "pr,fb", "--tol", str(args.tol), "--train-tol", str(args.tol),
               "--batch-size", str(args.batch_size), "--reps", str(args.reps)]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        rows.append({"name": name, **r})
        pr, fb, step = r["solvers"]["pr"], r["solvers"]["fb"], r["training_step"]
        print(f"{name:<18} training step {step['step_s']:.3f} s, resolvent rebuild {1e3 * step['build_s']:.0f} ms "
              f"({100 * step['build_share']:.1f}%), peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        print(f"{'':<18} pr: fwd {pr['fwd_iters']} it {pr['fwd_s']:.3f} s, bwd {pr['bwd_iters']} it {pr['bwd_s']:.3f} s"
              f" | fb: fwd {fb['fwd_iters']} it {fb['fwd_s']:.3f} s ({fb['fwd_ratio']:.1f}× pr), "
              f"bwd {fb['bwd_iters']} it {fb['bwd_s']:.3f} s ({fb['bwd_ratio']:.1f}× pr)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
