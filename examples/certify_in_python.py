"""Train a NEMON with the interval-bound loss in a loop of one's own, then certify and attack it, from Python.

    python examples/certify_in_python.py [--steps 300] [--images 500]

Runs on the embedded mnist-mini in about ten seconds; ``--steps`` and ``--images`` make it smaller or larger.
"""

from __future__ import annotations

import argparse

import torch

import mondeq
from mondeq.data import load_dataset
from mondeq.robustness import CertifiedLoss, certify


def main(steps: int = 300, images: int = 500) -> dict:
    torch.manual_seed(0)
    splits = load_dataset("mnist-mini", test_subset=images)
    normalization = splits.normalization  # a mondeq.Normalization: (x - mean) / std per channel
    model = mondeq.NemonFC(hidden=64)
    loss_fn = CertifiedLoss("inf", eps=0.1, normalization=normalization, warmup=0.2, ramp=0.5, mix=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batch = 100
    for step in range(steps):
        i = (step * batch) % (len(splits.train_labels) - batch)
        x, labels = splits.normalize(splits.train_images[i : i + batch]), splits.train_labels[i : i + batch]
        logits = model(x)
        loss = loss_fn(model, x, labels, logits, epochs_done=step / steps)  # ε ramps over the run
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.mon.eval_solver = mondeq.Average(tol=1e-5, max_iter=5000)  # tight solves for the certificate
    result = certify(model, splits.test_images, splits.test_labels, normalization, eps=[0.05, 0.1], norm="inf",
                     attack=True)
    print(f"clean {100 * result['clean_acc']:.1f}%; logits {result['lipschitz']:.3g}-Lipschitz (ℓ∞, pixels)")
    for row in result["results"]:
        print(f"  eps {row['eps']}: certified {100 * row['certified_acc']:.1f}% "
              f"(interval {100 * row['interval_certified_acc']:.1f}%), under PGD {100 * row['pgd_acc']:.1f}%")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()
    main(args.steps, args.images)
