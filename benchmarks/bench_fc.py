"""Solver benchmark of the MNIST-sized fully connected monDEQ (784 → 87, batch 128, float32).

Prints, for every solver with and without Anderson acceleration, forward and backward iterations and
times at tol 1e-4 as ratios to plain Peaceman–Rachford measured in the same run; the time of a whole
training step at the paper's training tolerance 1e-2; and the per-iteration time of Peaceman–Rachford
over the bare cost of its essential operations (the resolvent product and the activation).

    python benchmarks/bench_fc.py [--reps N] [--threads T] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import warnings

import torch
import torch.nn.functional as F

import mondeq
from mondeq.bench import best_median, solver_table, training_step
from mondeq.data import load_dataset


def pretrained_model(epochs: int) -> tuple[mondeq.FCMonDEQ, torch.Tensor, torch.Tensor]:
    """The reference model after a short training on mnist-mini (realistic, not initial, weights)."""
    torch.manual_seed(0)
    splits = load_dataset("mnist-mini")
    model = mondeq.FCMonDEQ(solver=mondeq.PeacemanRachford(tol=1e-2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = len(splits.train_labels)
    for _ in range(epochs):
        for idx in torch.randperm(n).split(128):
            logits = model(splits.normalize(splits.train_images[idx]))
            loss = F.cross_entropy(logits, splits.train_labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    x = splits.normalize(splits.test_images[:128])
    return model, x, splits.test_labels[:128]


def per_iteration_ratio(model: mondeq.FCMonDEQ, x: torch.Tensor, reps: int) -> dict:
    """Peaceman–Rachford per-iteration time (checks included) over a bare loop of its essential operations."""
    layer = model.mon
    y = layer.input_map(x.flatten(1)).detach()
    op = layer.operator.frozen()
    iters = 40
    solver = mondeq.PeacemanRachford(alpha=1.0, tol=1e-30, max_iter=iters)
    rm = op.resolvent(1.0).matrix.T.contiguous()

    def bare() -> None:
        u = y
        for _ in range(iters):
            u = torch.relu(u) @ rm

    def ours() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            solver.solve(op, layer.activation, y)

    t_bare = best_median(bare, reps) / iters
    t_ours = best_median(ours, reps) / iters
    fixed = mondeq.PeacemanRachford(alpha=1.0, tol=1e-30, max_iter=iters, check_every=iters)

    def ours_unchecked() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fixed.solve(op, layer.activation, y)

    t_step = best_median(ours_unchecked, reps) / iters
    return {"bare_us": 1e6 * t_bare, "iteration_us": 1e6 * t_ours, "step_only_us": 1e6 * t_step,
            "ratio": t_ours / t_bare, "ratio_step_only": t_step / t_bare}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=100, help="timed calls per round (5 rounds)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, x, labels = pretrained_model(args.pretrain_epochs)
    op = model.mon.operator.frozen()
    print(f"fully connected monDEQ 784→87, batch {len(x)}, float32, {torch.get_num_threads()} threads; "
          f"‖I − W‖₂ = {op.lipschitz:.3f}, m = {op.m}")

    tol = 1e-4
    base = {"pr": mondeq.PeacemanRachford(tol=tol), "dr": mondeq.DouglasRachford(tol=tol),
            "fb": mondeq.ForwardBackward(tol=tol, max_iter=2000)}
    solvers = {**base, **{k + "+anderson": mondeq.Anderson(s) for k, s in base.items()}}
    rows = solver_table(model, x, solvers, args.reps)
    print(f"\nsolves at tol {tol:g} (ratios to plain pr, same run)")
    print(f"{'solver':<14}{'fwd it':>7}{'bwd it':>7}{'fwd ms':>9}{'bwd ms':>9}{'fwd ×':>8}{'bwd ×':>8}")
    for name, r in rows.items():
        print(f"{name:<14}{r['fwd_iters']:>7}{r['bwd_iters']:>7}{1e3 * r['fwd_s']:>9.3f}{1e3 * r['bwd_s']:>9.3f}"
              f"{r['fwd_ratio']:>8.2f}{r['bwd_ratio']:>8.2f}")

    model.mon.solver = mondeq.PeacemanRachford(tol=1e-2)
    step = training_step(model, x, labels, args.reps)
    reference_ms = 1.8 + 2.3
    print(f"\ntraining step at tol 1e-2 (pr): {1e3 * step['passes_s']:.3f} ms forward + backward pass "
          f"({1e3 * step['step_s']:.3f} ms with the Adam update and the refactorisation it causes, "
          f"{1e3 * step['build_s']:.3f} ms of which rebuild the resolvent); {step['fwd_iters']} / "
          f"{step['bwd_iters']} iterations")
    print(f"the original code needs about {reference_ms} ms forward + backward on such a CPU: "
          f"{reference_ms / (1e3 * step['passes_s']):.1f}× faster ({reference_ms / (1e3 * step['step_s']):.1f}× "
          "counting the update)")

    it = per_iteration_ratio(model, x, args.reps)
    print(f"\nper pr iteration: {it['iteration_us']:.1f} µs with residual checks, "
          f"{it['step_only_us']:.1f} µs without; bare resolvent product + activation {it['bare_us']:.1f} µs: "
          f"ratio {it['ratio']:.2f} ({it['ratio_step_only']:.2f} without checks)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"solves": rows, "training_step": step, "per_iteration": it}, f, indent=2)


if __name__ == "__main__":
    main()
