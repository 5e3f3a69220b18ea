"""Data sets: the embedded ``mnist-mini`` and MNIST read from its standard idx files.

Images are kept as ``uint8`` tensors and normalised per batch on the training device.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

_HERE = Path(__file__).parent
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know of a data set."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str


DATASETS: dict[str, DatasetInfo] = {
    "mnist-mini": DatasetInfo(
        "mnist-mini", (1, 28, 28), 10, (0.1307,), (0.3081,),
        "embedded: 10,000 training and 2,000 test MNIST digits, class-balanced (CC BY-SA 3.0)",
    ),
    "mnist": DatasetInfo(
        "mnist", (1, 28, 28), 10, (0.1307,), (0.3081,),
        "MNIST from its idx files in --data-dir (60,000 / 10,000)",
    ),
}


@dataclass(frozen=True)
class Splits:
    """Training and test images (``uint8``, ``N × C × H × W``) with labels (``int64``)."""

    info: DatasetInfo
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor

    def normalize(self, images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(x/255 − mean)/std`` per channel, on the device of ``images``."""
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.info.mean, dtype=dtype, device=images.device).view(shape)
        std = torch.tensor(self.info.std, dtype=dtype, device=images.device).view(shape)
        return (images.to(dtype) / 255.0 - mean) / std


def random_crop_flip(
    images: Tensor, pad: int, flip: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Batched augmentation on the images' device: random crop after zero padding, optional h-flip.

    Each image is shifted by an independent offset in ``[-pad, pad]²`` (the crop of the padded image) and,
    with ``flip``, mirrored left-right with probability ½. Randomness comes from ``generator`` (CPU).
    """
    n, _, h, w = images.shape
    if pad > 0:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        off = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(images.device)
        rows = off[0, :, None] + torch.arange(h, device=images.device)
        cols = off[1, :, None] + torch.arange(w, device=images.device)
        batch = torch.arange(n, device=images.device)[:, None, None]
        images = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    return images.contiguous()


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (gzip-compressed or not) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise InputError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise InputError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims).copy()


def _find_idx(data_dir: Path, stem: str, subdirs: tuple[str, ...]) -> Path | None:
    for sub in subdirs:
        for name in (stem + ".gz", stem):
            p = data_dir / sub / name
            if p.is_file():
                return p
    return None


def _load_mnist(data_dir: str | Path | None) -> dict[str, np.ndarray]:
    if data_dir is None:
        raise InputError("dataset 'mnist' needs --data-dir, the folder of the MNIST idx files")
    root = Path(data_dir)
    subdirs = ("", "mnist", "MNIST/raw", "MNIST")
    found = {k: _find_idx(root, stem, subdirs) for k, stem in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] + "[.gz]" for k, p in found.items() if p is None]
    if missing:
        where = ", ".join(str(root / s) if s else str(root) for s in subdirs)
        raise InputError(f"MNIST files missing: {', '.join(missing)} (looked in {where})")
    return {k: read_idx(p) for k, p in found.items()}  # type: ignore[arg-type]


def _load_mnist_mini() -> dict[str, np.ndarray]:
    with np.load(_HERE / "mnist_mini.npz") as f:
        return {k: f[k] for k in MNIST_FILES}


def _subset(n_total: int, n: int | None, seed: int) -> Tensor | None:
    if n is None:
        return None
    if not 0 < n <= n_total:
        raise InputError(f"a subset needs 1 ≤ N ≤ {n_total}, got {n}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[:n].sort().values


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 0,
) -> Splits:
    """Load a data set by name; ``*_subset`` keep the first N of a fixed seeded permutation."""
    try:
        info = DATASETS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None
    arrays = _load_mnist_mini() if name == "mnist-mini" else _load_mnist(data_dir)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    for split in ("train", "test"):
        images = tensors[f"{split}_images"]
        if images.dim() == 3:
            tensors[f"{split}_images"] = images.unsqueeze(1)
        tensors[f"{split}_labels"] = tensors[f"{split}_labels"].long()
        if len(tensors[f"{split}_images"]) != len(tensors[f"{split}_labels"]):
            raise InputError(f"{name}: {split} images and labels differ in number")
    for split, n in (("train", train_subset), ("test", test_subset)):
        keep = _subset(len(tensors[f"{split}_labels"]), n, subset_seed)
        if keep is not None:
            for part in ("images", "labels"):
                tensors[f"{split}_{part}"] = tensors[f"{split}_{part}"][keep]
    return Splits(info, **tensors)
