"""Checkpoints: written atomically, read with one-line errors for missing, damaged or foreign files."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from ..errors import InputError

CHECKPOINT_KEYS = ("config", "epoch", "model", "optimizer", "scheduler", "metrics")
"""What every checkpoint holds; ``config`` is the run's configuration (``{}`` for a model built in Python)."""


def _replace_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """``write`` a temporary file in ``path``'s folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    # created as a plain write creates files (0o666 less the umask; mkstemp's would be owner-only)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it over ``path``."""
    _replace_atomic(path, lambda f: torch.save(obj, f))


def write_text_atomic(text: str, path: Path) -> None:
    """Write ``text`` (UTF-8) to a temporary file in the same folder, then rename it over ``path``."""
    _replace_atomic(path, lambda f: f.write(text.encode()))


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`~mondeq.training.fit`; a missing, corrupt or foreign file raises
    :class:`~mondeq.errors.InputError` (nothing is written)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise InputError(f"{path} is not a readable checkpoint (corrupt or truncated?): {type(e).__name__}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        raise InputError(f"{path} is not a mondeq training checkpoint")
    return ckpt


def load_model_state(model: nn.Module, state: dict, what: str) -> None:
    """``load_state_dict`` with a one-line error when the state belongs to another model."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(f"{what} holds a different model than its configuration describes: {first}") from None


def load_weights(model: nn.Module, path: str | Path) -> dict:
    """Put a checkpoint's weights into ``model`` (built as it was for training); returns the checkpoint."""
    ckpt = load_checkpoint(path)
    load_model_state(model, ckpt["model"], str(path))
    return ckpt
