"""Training-step time and peak memory of this checkout against another revision, measured alternately in
one run (a shared machine drifts; alternating rounds keep the ratio honest).

For each model (the paper's sizes, batch 128, Peaceman–Rachford at the training tolerance 1e-2, random
input of the data set's shape), one child process per revision and round builds the model with the same
seed, takes two warm-up steps and times training steps (forward, implicit backward, Adam update, the
resolvent rebuilt after it). The ``-ibp`` rows time the interval-bound training step of a NEMON instead (the
average iteration at 1e-2, the loss ``½·clean + ½·worst case`` over the ℓ∞ box of radius 0.1 on the normalised
scale around each input: a clean and an embedded solve, each with its implicit backward). The baseline runs
from a temporary ``git worktree`` of ``--baseline``.

    python benchmarks/compare_step.py --baseline REV [--models mnist-conv,...] [--rounds 3] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = {
    "mnist-fc": ("fc", "mnist"),
    "mnist-conv": ("conv", "mnist"),
    "mnist-multitier": ("multitier", "mnist"),
    "cifar10-conv": ("conv", "cifar10"),
    "cifar10-multitier": ("multitier", "cifar10"),
}
CERTIFIED = {  # NEMON sizes of the certified-training runs (docs/certified.md)
    "mnist-nemon-fc-ibp": ("nemon-fc", "mnist", {"hidden": 400}),
    "mnist-nemon-conv-ibp": ("nemon-conv", "mnist", {"channels": 16}),
}

CHILD = """
import json, resource, sys, time
import torch, torch.nn.functional as F
import mondeq
from mondeq.data import DATASETS
from mondeq.models import build_model
from mondeq.solvers import Average, PeacemanRachford
model_name, dataset, steps, src, options = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
assert mondeq.__file__.startswith(src), f"imported {mondeq.__file__}, not the tree under {src}"
options = json.loads(options)
certified = options.pop("certified", False)
info = DATASETS[dataset]
torch.manual_seed(0)
solver = Average(tol=1e-2) if certified else PeacemanRachford(tol=1e-2)
model = build_model(model_name, info.input_shape, info.num_classes, solver=solver, **options)
x, y = torch.randn(128, *info.input_shape), torch.randint(0, info.num_classes, (128,))
opt = torch.optim.Adam(model.parameters(), lr=1e-6)

def objective():
    logits = model(x)
    if not certified:
        return F.cross_entropy(logits, y)
    worst = model.interval_training(x - 0.1, x + 0.1, y)
    return 0.5 * F.cross_entropy(logits, y) + 0.5 * F.cross_entropy(worst, y)

times = []
for i in range(steps + 2):
    t = time.perf_counter()
    loss = objective()
    opt.zero_grad()
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"step_s": sorted(times[2:])[len(times[2:]) // 2], "peak_rss_mb": rss}))
"""


def _measure(src: Path, name: str, steps: int) -> dict:
    model, dataset, options = (*MODELS[name], {}) if name in MODELS else CERTIFIED[name]
    options = {**options, "certified": True} if name in CERTIFIED else options
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", CHILD, model, dataset, str(steps), str(src), json.dumps(options)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--models", default=",".join(MODELS), help=f"also: {', '.join(CERTIFIED)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per child (median)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS and n not in CERTIFIED]
    if unknown:
        sys.exit(f"compare_step: unknown model(s) {unknown}; choose from {', '.join([*MODELS, *CERTIFIED])}")
    root = Path(__file__).resolve().parent.parent
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "--quiet", str(tree), args.baseline],
                       check=True)
        try:
            for name in names:
                runs: dict[str, list[dict]] = {"baseline": [], "this": []}
                for _ in range(args.rounds):
                    runs["baseline"].append(_measure(tree / "src", name, args.steps))
                    runs["this"].append(_measure(root / "src", name, args.steps))
                best = {k: min(r["step_s"] for r in v) for k, v in runs.items()}
                rss = {k: statistics.median(r["peak_rss_mb"] for r in v) for k, v in runs.items()}
                rows.append({"model": name, "step_s": best, "peak_rss_mb": rss,
                             "speedup": best["baseline"] / best["this"]})
                print(f"{name:<18} step {best['baseline']:.3f} s → {best['this']:.3f} s "
                      f"({best['baseline'] / best['this']:.2f}×), peak RSS {rss['baseline']:.0f} → "
                      f"{rss['this']:.0f} MB", flush=True)
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], check=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": args.baseline, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
