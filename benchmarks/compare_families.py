"""Train models of different families with one recipe, one after the other in one run, and tabulate test
accuracy, parameters and solver iterations (the OptEq-against-monDEQ comparison of the README).

Every model gets the same configuration: its dataset's monDEQ preset (Adam, step decay, batch 128,
Peaceman–Rachford at tolerance 1e-2, evaluation at 1e-3) with ``m`` only where the model takes it. Each run
writes to ``OUT/<model>`` and resumes from there (``--resume``), so an interrupted comparison continues.

    python benchmarks/compare_families.py --models fc,opteq-fc,opteq-deep-fc --dataset mnist \\
        --data-dir DIR --epochs 10 --out runs/families-fc
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from mondeq.models import build_model
from mondeq.presets import preset
from mondeq.training import TrainConfig, train


def _config(model: str, args: argparse.Namespace) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    recipe = {k: v for k, v in preset(f"{args.dataset}-conv").items() if k in fields}
    recipe.update(model=model, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                  train_subset=args.train_subset, test_subset=args.test_subset, out=str(Path(args.out) / model),
                  seed=args.seed)
    if args.lr_step is not None:
        recipe["lr_step"] = args.lr_step
    if not model.startswith(("fc", "conv", "multitier")):
        recipe.pop("m", None)
    return TrainConfig(**recipe)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="fc,opteq-fc,opteq-deep-fc")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr-step", type=int, default=None, help="default: the preset's")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    rows, curves = [], {}
    for name in args.models.split(","):
        cfg = _config(name, args)
        done = Path(cfg.out) / "checkpoint.pt"
        resume = args.resume and done.exists()
        history = train(cfg, progress=False, resume=resume, overwrite=not resume)  # --out is this script's
        info_shape = (1, 28, 28) if args.dataset == "mnist" else (3, 32, 32)
        params = sum(t.numel() for t in build_model(name, info_shape, 10).parameters())
        last = history[-1]
        rows.append({"model": name, "params": params, "test_acc": last["test_acc"],
                     "best_test_acc": max(h["test_acc"] for h in history), "fwd_iters": last["fwd_iters"],
                     "bwd_iters": last["bwd_iters"], "test_iters": last["test_fwd_iters"],
                     "epoch_time_s": sum(h["epoch_time_s"] for h in history) / len(history),
                     "epochs": len(history)})
        curves[name] = [h["test_acc"] for h in history]
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| model | parameters | test accuracy (last / best) | iterations fwd / bwd / eval | s per epoch |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        iters = f"{r['fwd_iters']:.1f} / {r['bwd_iters']:.1f} / {r['test_iters']:.1f}"
        lines.append(f"| `{r['model']}` | {r['params']:,} | {100 * r['test_acc']:.2f}% / "
                     f"{100 * r['best_test_acc']:.2f}% | {iters} | {r['epoch_time_s']:.0f} |")
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    print(table)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, acc in curves.items():
        ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], "o-", label=name, markersize=3)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{args.dataset}: one recipe, several families")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
