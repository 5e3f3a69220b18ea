"""The ``mondeq`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .errors import MondeqError


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line and exit code 2, like every other user mistake."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mondeq: error: {message} (see `{self.prog} --help`)\n")


def _channels(text: str) -> int | list[int]:
    """``N`` or ``N,N,…`` (one count per tier)."""
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N,… (one count per tier), got {text!r}") from None
    return counts[0] if len(counts) == 1 else counts


def _step(text: str) -> float | str:
    """A step size: a number or ``auto``."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from .presets import PRESETS
    from .priors import PRIORS
    from .robustness.lipschitz import NORMS
    from .solvers import SOLVERS
    from .training import TrainConfig
    from .training.config import OPTIMIZERS, SCHEDULES

    d = TrainConfig()
    p = sub.add_parser("train", help="train a model and report test accuracy and solver statistics",
                       argument_default=argparse.SUPPRESS)
    p.add_argument("--preset", choices=list(PRESETS), help="a paper recipe (explicit options override it)")
    p.add_argument("--model", help=f"model name, see `mondeq models` (default {d.model})")
    p.add_argument("--dataset", help=f"dataset name, see `mondeq datasets` (default {d.dataset})")
    p.add_argument("--data-dir", help="folder of the dataset's files")
    p.add_argument("--download", action="store_true", help="fetch missing dataset files into --data-dir")
    p.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    p.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    p.add_argument("--test-batch-size", type=int, help=f"default {d.test_batch_size}")
    p.add_argument("--lr", type=float, help=f"learning rate, the peak of a one-cycle schedule (default {d.lr})")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), help=f"default {d.optimizer}")
    p.add_argument("--schedule", choices=list(SCHEDULES), help=f"learning-rate schedule (default {d.schedule})")
    p.add_argument("--lr-step", type=int, help=f"epochs between step decays (default {d.lr_step})")
    p.add_argument("--lr-gamma", type=float, help=f"step decay factor (default {d.lr_gamma})")
    p.add_argument("--weight-decay", type=float, help=f"default {d.weight_decay}")
    p.add_argument("--augment-pad", type=int, help=f"random-crop padding in pixels (default {d.augment_pad})")
    p.add_argument("--augment-flip", action="store_true", help="random horizontal flips")
    p.add_argument("--train-subset", type=int, help="first N of one fixed permutation (whatever --seed)")
    p.add_argument("--test-subset", type=int, help="first N of one fixed permutation (whatever --seed)")
    p.add_argument("--subset-seed", type=int, help="the seed of that permutation (default 0)")
    p.add_argument("--hidden", type=int, help="width of the equilibrium (fc 87, nemon-fc 100, opteq-fc 95 by default)")
    p.add_argument("--channels", type=_channels,
                   help="channels of the equilibrium: N (conv models), or one count per tier, e.g. 16,32,32 "
                        "(multi-tier models)")
    p.add_argument("--m", type=float, help="monDEQ: strong monotonicity of I - W (default 1)")
    p.add_argument("--gamma", type=float, help="NEMON: bound < 1 on the weighted ℓ∞ measure of W (default 0); "
                                               "OptEq: bound in (0, 1) on ‖V‖₂ (default 0.95)")
    p.add_argument("--prior", choices=list(PRIORS),
                   help="OptEq: a convex prior composed into the activation (l1: λ|z|, box: |z| ≤ weight, nonneg)")
    p.add_argument("--prior-weight", type=float, help="OptEq: the prior's λ (l1) or bound (box) (default 1)")
    p.add_argument("--solver", choices=sorted(SOLVERS),
                   help="default: the family's (pr for monDEQ and OptEq, avg, the average iteration, for NEMON)")
    p.add_argument("--anderson", action=argparse.BooleanOptionalAction,
                   help="Anderson-accelerate the solver (--no-anderson: not, where a preset does)")
    p.add_argument("--alpha", type=_step,
                   help="solver step size, or auto: 1/√(mL) for pr and dr from the operator's m and L = ‖I − W‖₂ "
                        "(default: the solver's, 1 for pr and dr)")
    p.add_argument("--tol", type=float, help=f"training tolerance on the residual (default {d.tol})")
    p.add_argument("--max-iter", type=int, help=f"default {d.max_iter}")
    p.add_argument("--eval-tol", type=float, help=f"evaluation tolerance (default {d.eval_tol})")
    p.add_argument("--eval-alpha", type=_step, help="evaluation step size (default: the training one)")
    p.add_argument("--bf16", action="store_true",
                   help="training forwards under torch.autocast in bfloat16 (input maps and readouts; the "
                        "equilibria and their solves stay in float32)")
    p.add_argument("--eval-max-iter", type=int, help="evaluation iteration limit (default: the training one)")
    p.add_argument("--lipschitz-reg", type=float,
                   help="NEMON: add λ × the ℓ∞ Lipschitz bound of the logits to the loss (default 0)")
    p.add_argument("--certified-train", choices=list(NORMS),
                   help="certified training: inf, the interval-bound loss (NEMON); 2, the Lipschitz-margin loss "
                        "(monDEQ, OptEq)")
    p.add_argument("--train-eps", type=float, help="the training radius on the pixel scale (with --certified-train)")
    p.add_argument("--eps-warmup", type=float, help=f"epochs of clean training first (default {d.eps_warmup})")
    p.add_argument("--eps-ramp", type=float,
                   help=f"epochs over which eps grows to --train-eps (default {d.eps_ramp})")
    p.add_argument("--robust-mix", type=float,
                   help=f"final weight of the clean loss against the certified one (default {d.robust_mix})")
    p.add_argument("--seed", type=int, help=f"default {d.seed}")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--out", help="folder for metrics.jsonl, config.json, checkpoint.pt, plots")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--overwrite", action="store_true", help="start again in an --out that holds a run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a saved model")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by `mondeq train --out`")
    p.add_argument("--dataset", default=None, help="dataset (default: the one it was trained on)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from .training import evaluate_checkpoint

    r = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir,
                            test_subset=args.test_subset, device=args.device)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['model']} (epoch {r['epoch']}) on {r['dataset']}: test accuracy {100 * r['test_acc']:.2f}% "
              f"of {r['n']:,} images, loss {r['test_loss']:.4f}, {r['fwd_iters']:.1f} solver iterations per batch")
    return 0


def _certify_parser(sub: argparse._SubParsersAction) -> None:
    from .robustness.lipschitz import NORMS

    p = sub.add_parser("certify", help="clean, certified (Lipschitz and interval bounds) and attacked accuracy")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by `mondeq train --out`")
    p.add_argument("--eps", type=float, action="append", required=True,
                   help="radius on the pixel scale [0, 1]; repeat for several")
    p.add_argument("--norm", choices=list(NORMS), default="2")
    p.add_argument("--dataset", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--tol", type=float, default=1e-5, help="solver tolerance of the logits (default 1e-5)")
    p.add_argument("--max-iter", type=int, default=5000,
                   help="iteration limit of those solves (default 5000; a solve stopped early stays sound, its "
                        "error bound is larger)")
    p.add_argument("--attack", choices=["pgd"], default=None, help="also attack with PGD")
    p.add_argument("--attack-steps", type=int, default=20, help="PGD steps (default 20)")
    p.add_argument("--restarts", type=int, default=1, help="PGD runs, the first from the clean image, the others "
                                                           "from random points of the ball (default 1)")
    p.add_argument("--plot", default=None, help="write a PNG of certified (and attacked) accuracy against eps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object (no progress bar)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cmd_certify(args: argparse.Namespace) -> int:
    import json

    from .training import certify_checkpoint

    r = certify_checkpoint(args.checkpoint, args.eps, args.norm, attack=args.attack == "pgd",
                           attack_steps=args.attack_steps, restarts=args.restarts, tol=args.tol,
                           max_iter=args.max_iter, plot=args.plot, progress=not (args.json or args.no_progress),
                           dataset=args.dataset, data_dir=args.data_dir, test_subset=args.test_subset,
                           device=args.device)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"clean accuracy {100 * r['clean_acc']:.2f}% of {r['n']:,} images; the logits are "
          f"{r['lipschitz']:.4g}-Lipschitz in the ℓ{r['norm']} norm of the pixels")
    if r["interval"]:
        print(f"  {r['interval']}")
    for row in r["results"]:
        parts = [f"certified {100 * row['certified_acc']:.2f}% (Lipschitz {100 * row['lipschitz_certified_acc']:.2f}%"]
        if "interval_certified_acc" in row:
            parts[0] += f", interval {100 * row['interval_certified_acc']:.2f}%"
        parts[0] += ")"
        if "pgd_acc" in row:
            parts.append(f"under PGD {100 * row['pgd_acc']:.2f}%")
        print(f"  eps {row['eps']:<8g} " + ", ".join(parts))
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="solver iterations and times of a model, as ratios in one run")
    p.add_argument("--model", default="fc", help="model name (default fc)")
    p.add_argument("--dataset", default="mnist-mini", help="input shape of this dataset (mnist-mini: real images)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--tol", type=float, default=1e-4, help="tolerance of the solver table (default 1e-4)")
    p.add_argument("--train-tol", type=float, default=1e-2, help="tolerance of the training step (default 1e-2)")
    p.add_argument("--solvers", help="comma-separated (default: the family's: pr,dr,fb and each +anderson for "
                                     "monDEQ; avg,avg+anderson for NEMON)")
    p.add_argument("--reps", type=int, default=10, help="timed calls per round (3 rounds)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    import torch

    from .bench import bench_model

    names = [s.strip() for s in args.solvers.split(",") if s.strip()] if args.solvers else None
    r = bench_model(args.model, args.dataset, batch_size=args.batch_size, tol=args.tol, train_tol=args.train_tol,
                    solvers=names, reps=args.reps, device=args.device, seed=args.seed)
    if args.json:
        print(json.dumps(r))
        return 0
    rows, step = r["solvers"], r["training_step"]
    print(f"{args.model} on {args.dataset}-shaped input, batch {args.batch_size}, {torch.get_num_threads()} "
          f"threads; solves at tol {args.tol:g}, times as ratios to {next(iter(rows))} (same run)")
    print(f"{'solver':<14}{'fwd it':>7}{'bwd it':>7}{'fwd ms':>10}{'bwd ms':>10}{'fwd ×':>8}{'bwd ×':>8}")
    for name, row in rows.items():
        print(f"{name:<14}{row['fwd_iters']:>7}{row['bwd_iters']:>7}{1e3 * row['fwd_s']:>10.3f}"
              f"{1e3 * row['bwd_s']:>10.3f}{row['fwd_ratio']:>8.2f}{row['bwd_ratio']:>8.2f}")
    print(f"training step at tol {args.train_tol:g} ({r['training_solver']}): {1e3 * step['step_s']:.3f} ms "
          f"({1e3 * step['passes_s']:.3f} ms forward + backward; {step['fwd_iters']} / {step['bwd_iters']} "
          f"iterations); building the resolvent after an update: {1e3 * step['build_s']:.3f} ms "
          f"({100 * step['build_share']:.1f}% of the step); the passes cost {step['passes_per_product']:.2f} × "
          f"one product σ(Wz + y) ({1e3 * step['product_s']:.3f} ms) per iteration")
    memory = [f"{r[k]:.0f} MB" + what for k, what in (("peak_rss_mb", " peak resident (the process)"),
                                                      ("cuda_peak_mb", " peak CUDA allocated")) if r.get(k)]
    if memory:
        print("memory: " + ", ".join(memory))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .presets import preset
    from .training import TrainConfig, train

    given = vars(args)
    fields = TrainConfig.__dataclass_fields__
    base = preset(given["preset"]) if "preset" in given else {}
    cfg = TrainConfig(**{**base, **{k: v for k, v in given.items() if k in fields}})
    history = train(cfg, progress=not given.get("no_progress", False), resume=given.get("resume", False),
                    overwrite=given.get("overwrite", False))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    last = history[-1]
    print(f"final test accuracy {100 * last['test_acc']:.2f}% after {cfg.epochs} epochs "
          f"(mean iterations per batch: forward {last['fwd_iters']:.1f}, backward {last['bwd_iters']:.1f}, "
          f"evaluation {last['test_fwd_iters']:.1f})")
    if cfg.out:
        print(f"wrote {cfg.out}/metrics.jsonl, config.json, checkpoint.pt, metrics.png")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import MODELS, model_info
    from .presets import PRESETS
    from .training import TrainConfig

    def flag(key: str, value: object) -> str:
        if isinstance(value, tuple) and key == "hidden":  # --hidden takes one width: the blocks are the model's
            return "blocks " + ",".join(map(str, value))
        if value is None:
            shown = "(the data set's)" if key == "channels" else "(none)"
        else:
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        return f"--{key.replace('_', '-')} {shown}"

    for name in MODELS:
        info = model_info(name)
        solvers = [f"{info.default_solver} (default)", *(s for s in info.solvers if s != info.default_solver)]
        flags = [flag(k, v) for k, v in info.options.items() if k in TrainConfig.__dataclass_fields__]
        print(f"{name:<16} {info.description}\n{'':<16} --solver {', '.join(solvers)}; {'; '.join(flags)}")
    print("\npresets (mondeq train --preset NAME --data-dir DIR):")
    for name, p in PRESETS.items():
        print(f"{name:<24} {p.model} on {p.dataset}, {p.epochs} epochs (paper: {p.paper_accuracy})")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS

    for name, info in DATASETS.items():
        print(f"{name:<12} {info.description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mondeq``; returns the exit code."""
    parser = _Parser(prog="mondeq", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mondeq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _train_parser(sub)
    _eval_parser(sub)
    _certify_parser(sub)
    _bench_parser(sub)
    sub.add_parser("models", help="list the models")
    sub.add_parser("datasets", help="list the datasets")
    args = parser.parse_args(argv)
    commands = {"train": _cmd_train, "eval": _cmd_eval, "certify": _cmd_certify, "bench": _cmd_bench,
                "models": _cmd_models, "datasets": _cmd_datasets}
    try:
        return commands[args.command](args)
    except MondeqError as e:
        print(f"mondeq: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`mondeq models | head`): nothing to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # the file system refused (a folder that cannot be made, a full disk): no traceback
        print(f"mondeq: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mondeq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
