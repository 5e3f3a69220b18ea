"""Cost of certified training: a training step with the certified loss against a plain one, same model, same
batches, alternated in one process (A B A B), as a ratio.

The model is a checkpoint's (trained weights: the iteration counts of a trained model, not an initial one's);
the step is forward, loss and backward (no optimiser update, so both losses see the same parameters). The
certified loss is that of the checkpoint's own configuration at its final ``ε`` and mix unless given.

    python benchmarks/bench_certified.py --checkpoint runs/nemon-ibp/checkpoint.pt [--data-dir DIR]
        [--norm inf|2] [--eps E] [--mix K] [--batches 20] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from mondeq.robustness import CertifiedLoss
from mondeq.training import model_from_checkpoint


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

    def step(i: int, robust: bool) -> float:
        x = splits.normalize(images[i * args.batch_size : (i + 1) * args.batch_size])
        y = labels[i * args.batch_size : (i + 1) * args.batch_size]
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        logits = model(x)
        loss = certified(model, x, y, logits, 1.0) if robust else F.cross_entropy(logits, y)
        loss.backward()
        return time.perf_counter() - start

    count = len(labels) // args.batch_size
    if count == 0:
        raise SystemExit(f"the checkpoint's test split has fewer than {args.batch_size} images: lower --batch-size")
    step(0, False), step(0, True)  # warm-up
    rows: dict[str, list[float]] = {"plain": [], "certified": []}
    for r in range(args.rounds):
        for i in range(args.batches):
            b = (r * args.batches + i) % count
            for name, robust in (("plain", False), ("certified", True)):  # A B A B on the same batch
                rows[name].append(step(b, robust))
    result = {"checkpoint": args.checkpoint, "norm": norm, "eps": eps, "mix": mix, "batch_size": args.batch_size,
              "threads": torch.get_num_threads()}
    for name, times in rows.items():
        result[f"{name}_median_s"] = statistics.median(times)
    result["ratio"] = result["certified_median_s"] / result["plain_median_s"]
    print(f"{norm} certified step (eps {eps}, mix {mix}) / plain step: {result['ratio']:.2f}× "
          f"({1e3 * result['certified_median_s']:.1f} ms / {1e3 * result['plain_median_s']:.1f} ms, "
          f"median of {len(rows['plain'])} alternated steps, batch {args.batch_size}, {result['threads']} threads)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
