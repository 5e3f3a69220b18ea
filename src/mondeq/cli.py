"""The ``mondeq`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import MondeqError


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from .train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a model and report test accuracy and solver statistics")
    p.add_argument("--model", default=d.model, help="model name (see `mondeq models`)")
    p.add_argument("--dataset", default=d.dataset, help="dataset name (see `mondeq datasets`)")
    p.add_argument("--data-dir", default=d.data_dir, help="folder of the dataset's files")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--test-batch-size", type=int, default=d.test_batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--lr-step", type=int, default=d.lr_step, help="epochs between learning-rate decays")
    p.add_argument("--lr-gamma", type=float, default=d.lr_gamma, help="learning-rate decay factor")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--augment-pad", type=int, default=d.augment_pad, help="random-crop padding (pixels)")
    p.add_argument("--augment-flip", action="store_true", help="random horizontal flips")
    p.add_argument("--train-subset", type=int, default=None, help="first N of a seeded permutation")
    p.add_argument("--test-subset", type=int, default=None, help="first N of a seeded permutation")
    p.add_argument("--hidden", type=int, default=None, help="width of the equilibrium (fc; default 87)")
    p.add_argument("--channels", type=int, default=None, help="channels of the equilibrium (conv models)")
    p.add_argument("--m", type=float, default=d.m, help="strong monotonicity of I - W")
    p.add_argument("--solver", default=d.solver, choices=["fb", "pr", "dr"])
    p.add_argument("--anderson", action="store_true", help="Anderson-accelerate the solver")
    p.add_argument("--alpha", type=float, default=None, help="solver step size (default: the solver's)")
    p.add_argument("--tol", type=float, default=d.tol, help="training tolerance on the residual")
    p.add_argument("--max-iter", type=int, default=d.max_iter)
    p.add_argument("--eval-tol", type=float, default=d.eval_tol, help="evaluation tolerance")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N")
    p.add_argument("--out", default=None, help="folder for metrics.jsonl, config.json, checkpoint.pt, plots")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
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

    from .train import evaluate_checkpoint

    r = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir,
                            test_subset=args.test_subset, device=args.device)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['model']} (epoch {r['epoch']}) on {r['dataset']}: test accuracy {100 * r['test_acc']:.2f}% "
              f"of {r['n']:,} images, loss {r['test_loss']:.4f}, {r['fwd_iters']:.1f} solver iterations per batch")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    history = train(cfg, progress=not args.no_progress, resume=args.resume)
    last = history[-1]
    print(f"final test accuracy {100 * last['test_acc']:.2f}% after {cfg.epochs} epochs "
          f"(mean iterations per batch: forward {last['fwd_iters']:.1f}, backward {last['bwd_iters']:.1f}, "
          f"evaluation {last['test_fwd_iters']:.1f})")
    if cfg.out:
        print(f"wrote {cfg.out}/metrics.jsonl, config.json, checkpoint.pt, metrics.png")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import DESCRIPTIONS

    for name, text in DESCRIPTIONS.items():
        print(f"{name:<12} {text}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS

    for name, info in DATASETS.items():
        print(f"{name:<12} {info.description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mondeq``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="mondeq", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mondeq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _eval_parser(sub)
    sub.add_parser("models", help="list the models")
    sub.add_parser("datasets", help="list the datasets")
    args = parser.parse_args(argv)
    commands = {"train": _cmd_train, "eval": _cmd_eval, "models": _cmd_models, "datasets": _cmd_datasets}
    try:
        return commands[args.command](args)
    except MondeqError as e:
        print(f"mondeq: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mondeq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
