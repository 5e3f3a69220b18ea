"""A model that is not in the registry — a small CNN in front of an equilibrium layer — trained with the library's
loop, saved, resumed, evaluated and certified, all from Python.

    python examples/custom_model.py [--family nemon|monotone] [--epochs 4] [--out runs/custom-model]

``compose`` checks every part and returns a classifier that knows its certificates (ℓ∞ and interval bounds for
a NEMON layer, ℓ2 for a monotone one). Runs on the embedded mnist-mini in about half a minute.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import mondeq
from mondeq.data import load_dataset
from mondeq.robustness import CertifiedLoss, certify
from mondeq.training import evaluate, fit, load_weights


def build(family: str) -> nn.Module:
    """Conv → batch norm → ReLU → max pool, then an equilibrium layer of 48 units, then a linear head."""
    features = [nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]
    operator = mondeq.DenseNemon(48) if family == "nemon" else mondeq.DenseMonotone(48, m=1.0)
    layer = mondeq.EquilibriumLayer(nn.Linear(8 * 7 * 7, 48), operator)
    return mondeq.compose((1, 28, 28), features, layer, nn.Linear(48, 10))


def main(family: str = "nemon", epochs: int = 4, out: str = "runs/custom-model", images: int = 300,
         train_images: int | None = None) -> dict:
    torch.manual_seed(0)
    splits = load_dataset("mnist-mini", train_subset=train_images, test_subset=images)
    train, test = (splits.train_images, splits.train_labels), (splits.test_images, splits.test_labels)
    norm = "inf" if family == "nemon" else "2"
    eps = 0.1 if norm == "inf" else 1.0
    # interval-bound (NEMON) or Lipschitz-margin (monotone) training, ε ramped up over the second half
    loss = CertifiedLoss(norm, eps, splits.normalization, warmup=0.5 * epochs, ramp=0.5 * epochs, mix=0.5)
    model = build(family)
    loss.check(model)  # refuses, in one line, a model whose family has no such bound
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(model, train, test, epochs=epochs // 2, optimizer=opt, loss=loss, prepare=splits.normalize, out=out,
        overwrite=True, progress=False)  # a demonstration: it starts again each time it runs
    fit(model, train, test, epochs=epochs, optimizer=opt, loss=loss, prepare=splits.normalize, out=out,
        resume=True, progress=False)  # continues where the first call stopped, as after an interruption

    fresh = build(family)
    load_weights(fresh, f"{out}/checkpoint.pt")
    fresh.eval()  # bounds hold for the batch norm's evaluation map
    fresh.mon.eval_solver = mondeq.Average(tol=1e-6, max_iter=5000) if family == "nemon" else fresh.mon.eval_solver
    acc = evaluate(fresh, test, prepare=splits.normalize)["test_acc"]
    result = certify(fresh, splits.test_images, splits.test_labels, splits.normalization, eps=[eps / 2, eps],
                     norm=norm, attack=True)
    print(f"test accuracy {100 * acc:.1f}%; logits {result['lipschitz']:.3g}-Lipschitz (ℓ{norm}, pixels)")
    for row in result["results"]:
        print(f"  eps {row['eps']}: certified {100 * row['certified_acc']:.1f}%, under PGD {100 * row['pgd_acc']:.1f}%")
    return {"test_acc": acc, **result}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=["nemon", "monotone"], default="nemon")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default="runs/custom-model")
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    main(args.family, args.epochs, args.out, args.images)
