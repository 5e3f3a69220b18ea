"""Cost of certified training: a training step with the certified loss against a plain one, same model, same
batches, alternated in one process (A B A B), as a ratio.

The model is a checkpoint's (trained weights: the iteration counts of a trained model, not an initial one's);
the step is forward, loss and backward (no optimiser update, so both losses see the same parameters). The
certified loss is that of the checkpoint's own configuration at its final ``ε`` and mix unless given.

``--anderson-ab`` alternates each step with the checkpoint's solver unaccelerated and Anderson-accelerated as
well (four steps per batch), and reports both ratios with the iterations per solve: where acceleration pays.

    python benchmarks/bench_certified.py --checkpoint runs/nemon-ibp/checkpoint.pt [--data-dir DIR]
        [--norm inf|2] [--eps E] [--mix K] [--batches 20] [--rounds 3] [--anderson-ab] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from mondeq.bench import single_layer
from mondeq.robustness import CertifiedLoss
from mondeq.solvers import Anderson
from mondeq.training import model_from_checkpoint


def _name(kind: str, solver: str) -> str:
    return f"{kind}_{solver}" if solver else kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--norm", choices=["inf", "2"], default=None, help="default: the checkpoint's")
    parser.add_argument("--eps", type=float, default=None, help="default: the checkpoint's --train-eps")
    parser.add_argument("--mix", type=float, default=None, help="default: the checkpoint's --robust-mix")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--batches", type=int, default=20, help="batches per round, each run by both steps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--anderson-ab", action="store_true", help="also alternate plain and Anderson solvers")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    model, splits, ckpt = model_from_checkpoint(args.checkpoint, data_dir=args.data_dir)
    config = ckpt["config"]
    model.train()
    norm = args.norm or config.get("certified_train") or "inf"
    eps = args.eps if args.eps is not None else config.get("train_eps") or 0.1
    mix = args.mix if args.mix is not None else config.get("robust_mix", 0.5)
    certified = CertifiedLoss(norm, eps, splits.normalization, warmup=0.0, ramp=0.0, mix=mix)
    certified.check(model)
    images, labels = splits.test_images, splits.test_labels  # real images; the step does not learn from them
    layer = single_layer(model)
    base = layer.solver.base if isinstance(layer.solver, Anderson) else layer.solver
    solvers = {"": layer.solver} if not args.anderson_ab else {"base": base, "anderson": Anderson(base)}
    iterations: dict[str, list[int]] = {}

    def step(i: int, robust: bool, solver: str = next(iter(solvers))) -> float:
        x = splits.normalize(images[i * args.batch_size : (i + 1) * args.batch_size])
        y = labels[i * args.batch_size : (i + 1) * args.batch_size]
        layer.solver = solvers[solver]
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        logits = model(x)
        loss = certified(model, x, y, logits, 1.0) if robust else F.cross_entropy(logits, y)
        loss.backward()
        elapsed = time.perf_counter() - start
        record = layer.last_interval_solve if robust and norm == "inf" else layer.last_solve  # the costly solves
        key = _name("certified" if robust else "plain", solver)
        if record is not None:
            iterations.setdefault(key, []).extend(s.iterations for s in (record.forward, record.backward) if s)
        return elapsed

    count = len(labels) // args.batch_size
    if count == 0:
        raise SystemExit(f"the checkpoint's test split has fewer than {args.batch_size} images: lower --batch-size")
    variants = [(_name(kind, s), kind == "certified", s) for s in solvers for kind in ("plain", "certified")]
    for _, robust, solver in variants:  # warm-up
        step(0, robust, solver)
    iterations.clear()
    rows: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for r in range(args.rounds):
        for i in range(args.batches):
            b = (r * args.batches + i) % count
            for name, robust, solver in variants:  # A B A B on the same batch
                rows[name].append(step(b, robust, solver))
    result: dict = {"checkpoint": args.checkpoint, "norm": norm, "eps": eps, "mix": mix,
                    "batch_size": args.batch_size, "threads": torch.get_num_threads()}
    for name, times in rows.items():
        result[f"{name}_median_s"] = statistics.median(times)
        result[f"{name}_iterations"] = statistics.mean(iterations.get(name, [0]))
    print(f"median of {len(rows[variants[0][0]])} alternated steps, batch {args.batch_size}, "
          f"{result['threads']} threads; {norm} certified loss at eps {eps}, mix {mix}")
    for solver in solvers:
        plain, cert = (result[f"{_name(kind, solver)}_median_s"] for kind in ("plain", "certified"))
        result[_name("ratio", solver)] = cert / plain
        print(f"certified / plain step{f' ({solver})' if solver else ''}: {cert / plain:.2f}× ({1e3 * cert:.1f} ms / "
              f"{1e3 * plain:.1f} ms; {result[_name('certified', solver) + '_iterations']:.1f} / "
              f"{result[_name('plain', solver) + '_iterations']:.1f} iterations per solve, the interval ones for inf)")
    if args.anderson_ab:
        for kind in ("plain", "certified"):
            ratio = result[f"{kind}_base_median_s"] / result[f"{kind}_anderson_median_s"]
            result[f"anderson_speedup_{kind}"] = ratio
            print(f"Anderson speed-up of the {kind} step: {ratio:.2f}×")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
