"""The certify loop: clean, attacked and certified accuracy of a classifier on test images (SPEC 5).

A point counts as certified at ``ε`` when it is classified correctly and either its Lipschitz radius (reduced
by what the solve's error can change in the margin) exceeds ``ε`` or the interval enclosure of its ℓ∞ ball of
radius ``ε`` (which holds its ℓ2 ball too) proves every other logit below the label's, where the model offers
interval bounds (:meth:`~mondeq.robustness.lipschitz.Certifiable.interval_support`). Both are sound, so either
suffices. An attack's success on a certified point contradicts the certificate and raises
:class:`CertificateError`.

The model is any :class:`~mondeq.robustness.lipschitz.Certifiable` classifier with one equilibrium layer;
images are ``uint8`` or on the pixel scale ``[0, 1]``, mapped to the model's input by a
:class:`~mondeq.normalization.Normalization`.
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
from ..layers import EquilibriumLayer
from ..normalization import Normalization
from .attacks import pgd
from .lipschitz import Certifiable, LipschitzBound, certified_radii, check_norm


def _certifiable(model: nn.Module) -> tuple[Certifiable, EquilibriumLayer]:
    layers = [m for m in model.modules() if isinstance(m, EquilibriumLayer)]
    if not isinstance(model, Certifiable) or len(layers) != 1:
        raise InputError(f"no certificate for {type(model).__name__}: it needs lipschitz, interval_support and "
                         "interval (the certificate protocol) and one equilibrium layer")
    return model, layers[0]


@torch.no_grad()
def certified_radius(
    model: nn.Module, images: Tensor, labels: Tensor, normalization: Normalization, norm: str = "2",
    batch_size: int = 400,
) -> tuple[Tensor, Tensor, LipschitzBound]:
    """Per image: whether it is classified correctly and the radius (pixel scale, in ``norm``) within which its
    prediction provably cannot change, the solve's error accounted for; and the model's bounds."""
    check_norm(norm)
    certifiable, layer = _certifiable(model)
    bound = certifiable.lipschitz(norm, normalization)
    model.eval()
    device = next(model.parameters()).device
    radii, correct = [], []
    for i in range(0, len(labels), batch_size):
        x = normalization(normalization.pixels(images[i : i + batch_size].to(device)))
        logits = model(x).double()
        correct.append(logits.argmax(1).cpu() == labels[i : i + batch_size].cpu())
        error = layer.last_solve.forward.error_bound.double().to(logits.device)  # type: ignore[union-attr]
        radii.append((certified_radii(logits, bound.pairs) - error / bound.state).clamp_min(0.0).cpu())
    return torch.cat(correct), torch.cat(radii), bound


def _interval_certified(twin: Certifiable, pixels: Tensor, labels: Tensor, normalization: Normalization,
                        eps: float) -> Tensor:
    """Whether the interval enclosure of each image's ℓ∞ ball (float64 twin) keeps the label on top."""
    margins = twin.interval(*normalization.box(pixels.to(torch.float64), eps))
    own = margins[torch.arange(len(labels)), labels]  # lower bounds of y_label − y_l
    own[torch.arange(len(labels)), labels] = torch.inf
    return own.amin(1) > 0


@torch.no_grad()
def certify(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    normalization: Normalization,
    eps: Sequence[float],
    norm: str = "2",
    batch_size: int = 400,
    attack: bool = False,
    attack_steps: int = 20,
    restarts: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Clean accuracy, the Lipschitz bound, and per ``eps`` the certified accuracy (with the share of each
    certificate) and, with ``attack``, the accuracy under PGD, on ``images`` (``uint8`` or pixel scale);
    ``progress``: a bar over the batches of every ``eps``.

    ``eps`` and the bound are on the pixel scale. Logits come from the model's evaluation solver; solve it
    tightly for certificates. ``interval`` in the result is ``None`` where interval bounds were used, else why
    the model has none.

    Raises:
        InputError: a negative or non-finite ``eps``, ``attack_steps`` or ``restarts`` below 1, bad shapes.
        CertificateError: an attack changed the prediction of a certified point.
    """
    if not eps or any(not 0 <= e < math.inf for e in eps):
        raise InputError(f"eps must be one or more finite radii ≥ 0, got {list(eps)}")
    if attack_steps < 1 or restarts < 1 or batch_size < 1:
        raise InputError(f"attack_steps, restarts and batch_size must be ≥ 1, got {attack_steps}, {restarts}, "
                         f"{batch_size}")
    ok, radius, bound = certified_radius(model, images, labels, normalization, norm, batch_size)
    device = next(model.parameters()).device
    unsupported = _certifiable(model)[0].interval_support()
    twin = None if unsupported else _certifiable(copy.deepcopy(model).double().eval())[0]
    batches = range(0, len(ok), batch_size)
    from tqdm.auto import tqdm

    passes = (sum(e > 0 for e in eps) if twin is not None else 0) + (len(eps) if attack else 0)
    bar = tqdm(total=passes * len(batches), desc="certify", unit="batch", dynamic_ncols=True, disable=not progress)
    results = []
    for e in eps:
        by_lipschitz = ok & (radius > e)
        row: dict[str, Any] = {"eps": float(e), "lipschitz_certified_acc": float(by_lipschitz.double().mean())}
        certified = by_lipschitz
        if twin is not None and e > 0:
            parts = []
            for i in batches:
                parts.append(_interval_certified(twin, normalization.pixels(images[i : i + batch_size].to(device)),
                                                 labels[i : i + batch_size].to(device), normalization, e).cpu())
                bar.update()
            by_interval = ok & torch.cat(parts)
            row["interval_certified_acc"] = float(by_interval.double().mean())
            certified = certified | by_interval
        row["certified_acc"] = float(certified.double().mean())
        if attack:
            survived = []
            for i in batches:
                batch = labels[i : i + batch_size].to(device)
                adv = pgd(model, normalization, images[i : i + batch_size].to(device), batch, e, norm,
                          attack_steps, restarts)
                survived.append((model(normalization(adv)).argmax(1) == batch).cpu())
                bar.update()
            robust = ok & torch.cat(survived)
            broken = certified & ~robust
            if bool(broken.any()):
                raise CertificateError(f"PGD broke {int(broken.sum())} point(s) certified at eps {e} (ℓ{norm}): "
                                       "the certificate is unsound")
            row["pgd_acc"] = float(robust.double().mean())
        results.append(row)
    bar.close()
    return {"norm": norm, "n": len(ok), "clean_acc": float(ok.double().mean()), "lipschitz": bound.logits,
            "interval": unsupported, "results": results}


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
