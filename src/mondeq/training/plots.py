"""The training run's figure: accuracy, loss, solver iterations, missed solves and one residual trace."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError


def check_plot_path(path: str | Path) -> None:
    """Refuse, before any work, a figure path whose folder does not exist or whose suffix matplotlib cannot
    write (:class:`~mondeq.errors.InputError`)."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write the plot {path}: no folder {path.parent}")
    suffix = path.suffix.lstrip(".").lower()
    kinds = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in kinds:
        raise InputError(f"cannot write the plot {path}: not a figure format ({', '.join(sorted(kinds))})")


def plot_metrics(history: list[dict], path: Path, traces: Sequence[tuple] = ()) -> None:
    """Accuracy, loss and solver iterations per epoch, and the residual of one evaluation solve (``traces``),
    as one PNG, replaced atomically. Test curves are drawn where the history has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    tested = all("test_acc" in h for h in history)
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.6))
    axes[0].plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    axes[1].plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if tested:
        axes[0].plot(epochs, [100 * h["test_acc"] for h in history], "o-", label="test")
        axes[1].plot(epochs, [h["test_loss"] for h in history], "o-", label="test")
    axes[0].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    axes[1].set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    axes[2].plot(epochs, [h["fwd_iters"] for h in history], "o-", label="forward")
    axes[2].plot(epochs, [h["bwd_iters"] for h in history], "o-", label="backward")
    axes[2].set(xlabel="epoch", ylabel="iterations per batch", title="solver iterations")
    axes[3].plot(epochs, [h.get("missed_solves", 0) for h in history], "o-", label="training")
    if tested:
        axes[3].plot(epochs, [h.get("test_missed_solves", 0) for h in history], "o-", label="evaluation")
    axes[3].set(xlabel="epoch", ylabel="solves per epoch", title="solves that missed their tolerance")
    axes[3].set_ylim(bottom=0)
    for solver, its, res in traces:
        axes[4].plot(its, res, "o-", label=solver)
    axes[4].set(xlabel="iteration", ylabel="max relative residual", title="residual, one test batch", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)  # a run stopped while plotting keeps the previous figure
