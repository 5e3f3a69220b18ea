"""The certify loop: clean, attacked and certified accuracy of a classifier on a test split (SPEC 5).

A point counts as certified at ``ε`` when it is classified correctly and either its Lipschitz radius (reduced
by what the solve's error can change in the margin) exceeds ``ε`` or, for ℓ∞ and a NEMON, the interval
enclosure of its ``ε``-ball proves every other logit below the label's. Both are sound, so either suffices. An
attack's success on a certified point contradicts the certificate and raises :class:`CertificateError`.

``splits`` is any object with ``test_images`` (``uint8``), ``test_labels``, ``normalize`` (``uint8`` → model
input), ``standardize`` (pixels → model input) and ``info.mean``/``info.std``/``info.input_shape``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CertificateError, InputError
from .attacks import pgd
from .interval import interval_margins, pixel_box
from .lipschitz import certified_radii, linf_certificate, lipschitz_l2


@torch.no_grad()
def certified_radius(
    model: nn.Module, splits: Any, norm: str = "2", batch_size: int = 400
) -> tuple[Tensor, Tensor, float]:
    """Per test image: whether it is classified correctly and the radius (pixel scale, in ``norm``) within
    which its prediction provably cannot change; and the Lipschitz bound of the logits in that norm."""
    if norm not in ("2", "inf"):
        raise InputError(f"--norm must be 2 or inf, got {norm!r}")
    if hasattr(model, "linf_bound"):  # an ℓ∞ radius is an ℓ2 one too: ‖δ‖∞ ≤ ‖δ‖₂
        lip, pairs, reduce = linf_certificate(model, splits.info.std)
    else:
        lip, pairs = lipschitz_l2(model)
        scale = 1.0 / min(splits.info.std)
        if norm == "inf":
            scale *= math.sqrt(math.prod(splits.info.input_shape))
        lip, pairs = lip * scale, pairs * scale
        # a margin error ‖Cᵢ − Cⱼ‖‖R‖·e costs the radius e·m/(‖U‖₂·scale)
        reduce = model.mon.operator.m / (model.input_norm() * scale)  # type: ignore[union-attr, operator]
    model.eval()
    device = next(model.parameters()).device
    radii, correct = [], []
    for i in range(0, len(splits.test_labels), batch_size):
        x = splits.normalize(splits.test_images[i : i + batch_size].to(device))
        logits = model(x).double()
        correct.append(logits.argmax(1).cpu() == splits.test_labels[i : i + batch_size])
        radius = certified_radii(logits, pairs)
        stats = model.mon.last_solve.forward  # type: ignore[union-attr]
        radius = (radius - stats.error_bound.double().to(radius.device) * reduce).clamp_min(0.0)
        radii.append(radius.cpu())
    return torch.cat(correct), torch.cat(radii), lip



def _interval_certified(
    twin: nn.Module, splits: Any, images: Tensor, labels: Tensor, eps: float
) -> Tensor:
    """Whether the interval enclosure of each image's ℓ∞ ball (float64 twin) keeps the label on top."""
    pixels = images.to(torch.float64) / 255.0
    lo, hi = pixel_box(pixels, eps, splits.info.mean, splits.info.std)
    margins = interval_margins(twin, lo, hi)
    own = margins[torch.arange(len(labels)), labels]  # lower bounds of y_label − y_l
    own[torch.arange(len(labels)), labels] = math.inf
    return own.amin(1) > 0


@torch.no_grad()
def certify(
    model: nn.Module,
    splits: Any,
    eps: Sequence[float],
    norm: str = "2",
    batch_size: int = 400,
    attack: bool = False,
    attack_steps: int = 20,
    restarts: int = 1,
) -> dict:
    """Clean accuracy, the Lipschitz bound, and per ``eps`` the certified accuracy (with the share of each
    certificate) and, with ``attack``, the accuracy under PGD, on the test split.

    ``eps`` and the bound are on the pixel scale. Logits come from the model's evaluation solver; solve it
    tightly for certificates.

    Raises:
        CertificateError: an attack changed the prediction of a certified point.
    """
    ok, radius, lip = certified_radius(model, splits, norm, batch_size)
    device = next(model.parameters()).device
    interval = norm == "inf" and hasattr(model, "input_box")
    twin = copy.deepcopy(model).double().eval() if interval else None
    results = []
    for e in eps:
        by_lipschitz = ok & (radius > e)
        row: dict[str, Any] = {"eps": float(e), "lipschitz_certified_acc": float(by_lipschitz.double().mean())}
        certified = by_lipschitz
        if twin is not None and e > 0:
            parts = [_interval_certified(twin, splits, splits.test_images[i : i + batch_size].to(device),
                                         splits.test_labels[i : i + batch_size].to(device), e).cpu()
                     for i in range(0, len(ok), batch_size)]
            by_interval = ok & torch.cat(parts)
            row["interval_certified_acc"] = float(by_interval.double().mean())
            certified = certified | by_interval
        row["certified_acc"] = float(certified.double().mean())
        if attack:
            survived = []
            for i in range(0, len(ok), batch_size):
                labels = splits.test_labels[i : i + batch_size].to(device)
                adv = pgd(model, splits, splits.test_images[i : i + batch_size].to(device), labels, e, norm,
                          attack_steps, restarts)
                survived.append((model(splits.standardize(adv)).argmax(1) == labels).cpu())
            robust = ok & torch.cat(survived)
            broken = certified & ~robust
            if bool(broken.any()):
                raise CertificateError(f"PGD broke {int(broken.sum())} point(s) certified at eps {e} (ℓ{norm}): "
                                       "the certificate is unsound")
            row["pgd_acc"] = float(robust.double().mean())
        results.append(row)
    return {"norm": norm, "n": len(ok), "clean_acc": float(ok.double().mean()), "lipschitz": lip,
            "results": results}


def plot_certify(result: dict, path: str | Path) -> None:
    """A PNG of certified (and attacked) accuracy against ``ε`` (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("a plot needs matplotlib: pip install matplotlib") from None
    rows = result["results"]
    eps = [r["eps"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(eps, [100 * r["certified_acc"] for r in rows], "o-", label="certified")
    if all("pgd_acc" in r for r in rows):
        ax.plot(eps, [100 * r["pgd_acc"] for r in rows], "s--", label="under PGD (upper bound)")
    ax.axhline(100 * result["clean_acc"], color="grey", lw=0.8, label="clean")
    ax.set_xlabel(f"ε (ℓ{'∞' if result['norm'] == 'inf' else result['norm']}, pixel scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
