"""Training options side by side on trained models, in one run: Peaceman–Rachford at ``α = 1``, at
``alpha="auto"`` (``1/√(mL)``, SPEC 2), and with bfloat16 autocast (``--bf16``).

For each checkpoint, on ``--batches`` test batches of ``--batch-size``: the training solver's forward and
backward iterations and the time of a training pass (forward and backward from parameters just moved: the
resolvent is rebuilt, and for ``auto`` the norm estimate recomputed, as after every optimiser step), with the
options taking turns batch by batch (the order rotates), and the evaluation solve's iterations
(``--eval-tol``). Times are medians; ratios are to the first option. ``--json`` prints one JSON object.

    python benchmarks/step_options.py runs/fc/checkpoint.pt runs/mnist-conv-fast/checkpoint.pt --data-dir DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from mondeq.bench import single_layer
from mondeq.solvers import PeacemanRachford
from mondeq.training import model_from_checkpoint

OPTIONS: dict[str, tuple[float | str, bool]] = {"alpha 1": (1.0, False), "alpha auto": ("auto", False),
                                                "bf16": (1.0, True)}
"""Option name → (Peaceman–Rachford's step, bfloat16 autocast)."""


def _measure(path: str, names: list[str], args: argparse.Namespace) -> dict:
    model, splits, ckpt = model_from_checkpoint(path, data_dir=args.data_dir,
                                                test_subset=(args.batches + 1) * args.batch_size)
    layer, cfg = single_layer(model), ckpt["config"]
    solvers = {n: PeacemanRachford(alpha=OPTIONS[n][0], tol=cfg["tol"], max_iter=cfg["max_iter"]) for n in names}
    seen: dict[str, dict[str, list[float]]] = {n: {"fwd": [], "bwd": [], "eval": [], "s": [], "alpha": []}
                                               for n in names}
    images = splits.normalize(splits.test_images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(args.batches + 1):  # batch 0 warms up and is not counted
            x = images[b * args.batch_size:(b + 1) * args.batch_size]
            y = splits.test_labels[b * args.batch_size:(b + 1) * args.batch_size]
            for name in names[b % len(names):] + names[:b % len(names)]:
                layer.solver = solvers[name]
                model.train()
                model.zero_grad(set_to_none=True)
                layer.operator._cache = None  # as after an optimiser step: nothing of the last one is reused
                t = time.perf_counter()
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=OPTIONS[name][1]):
                    logits = model(x).float()
                F.cross_entropy(logits, y).backward()
                elapsed = time.perf_counter() - t
                rec = layer.last_solve
                assert rec is not None and rec.forward is not None and rec.backward is not None
                model.eval()
                layer.eval_solver = solvers[name].with_options(tol=args.eval_tol)
                with torch.no_grad():
                    model(x)
                assert layer.last_solve is not None and layer.last_solve.forward is not None
                if b:
                    row = seen[name]
                    row["fwd"].append(rec.forward.iterations)
                    row["bwd"].append(rec.backward.iterations)
                    row["eval"].append(layer.last_solve.forward.iterations)
                    row["s"].append(elapsed)
                    row["alpha"].append(rec.forward.alpha)
    out: dict = {"checkpoint": path, "model": cfg["model"], "tol": cfg["tol"], "eval_tol": args.eval_tol}
    for name, row in seen.items():
        out[name] = {"fwd_iters": statistics.mean(row["fwd"]), "bwd_iters": statistics.mean(row["bwd"]),
                     "eval_iters": statistics.mean(row["eval"]), "pass_s": statistics.median(row["s"]),
                     "alpha": statistics.mean(row["alpha"])}
        out[name]["time_ratio"] = out[name]["pass_s"] / out[names[0]]["pass_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--options", default=",".join(OPTIONS), help=f"comma-separated, of {', '.join(OPTIONS)}")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-tol", type=float, default=1e-3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    names = args.options.split(",")
    if unknown := [n for n in names if n not in OPTIONS]:
        p.error(f"unknown option(s) {unknown}; choose from {', '.join(OPTIONS)}")
    results = [_measure(c, names, args) for c in args.checkpoints]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("| model | option | α | iterations fwd / bwd / eval | pass time | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        for n in names:
            o = r[n]
            print(f"| {r['model']} ({Path(r['checkpoint']).parent.name}) | {n} | {o['alpha']:.3f} | "
                  f"{o['fwd_iters']:.1f} / {o['bwd_iters']:.1f} / {o['eval_iters']:.1f} | "
                  f"{1e3 * o['pass_s']:.1f} ms | {o['time_ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
