"""Data sets: the embedded ``mnist-mini``; MNIST and Fashion-MNIST (idx files), CIFAR-10 (the python
pickle batches) and SVHN (the ``.mat`` files) read from ``--data-dir``.

Images are kept as ``uint8`` tensors and normalised per batch on the training device.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..normalization import Normalization

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
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,),
        "Fashion-MNIST from its idx files in --data-dir (60,000 / 10,000)",
    ),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        "CIFAR-10 from its python batches in --data-dir (50,000 / 10,000)",
    ),
    "svhn": DatasetInfo(
        "svhn", (3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.198, 0.201, 0.197),
        "SVHN from train_32x32.mat and test_32x32.mat in --data-dir (73,257 / 26,032)",
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

    @functools.cached_property
    def normalization(self) -> Normalization:
        """The per-channel normalisation of this data set's images."""
        return Normalization(self.info.mean, self.info.std)

    def normalize(self, images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(x/255 − mean)/std`` per channel for ``uint8`` images, on their device."""
        return self.standardize(images.to(dtype) / 255.0)

    def standardize(self, pixels: Tensor) -> Tensor:
        """``(x − mean)/std`` per channel for images on the pixel scale ``[0, 1]`` (differentiable)."""
        return self.normalization(pixels)


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


def _root(name: str, data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise InputError(f"dataset {name!r} needs --data-dir, the folder of its files")
    return Path(data_dir)


def _where(root: Path, subdirs: tuple[str, ...]) -> str:
    return ", ".join(str(root / s) if s else str(root) for s in subdirs)


def _idx_loader(title: str, subdirs: tuple[str, ...]) -> Callable[[Path], dict[str, np.ndarray]]:
    def load(root: Path) -> dict[str, np.ndarray]:
        found = {k: _find_idx(root, stem, subdirs) for k, stem in MNIST_FILES.items()}
        missing = [MNIST_FILES[k] + "[.gz]" for k, p in found.items() if p is None]
        if missing:
            raise InputError(f"{title} files missing: {', '.join(missing)} (looked in {_where(root, subdirs)})")
        return {k: read_idx(p) for k, p in found.items()}  # type: ignore[arg-type]

    return load


def _load_cifar10(root: Path) -> dict[str, np.ndarray]:
    subdirs = ("", "cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    folder = next((root / s for s in subdirs if all((root / s / n).is_file() for n in names)), None)
    if folder is None:
        raise InputError(f"CIFAR-10 files missing: {', '.join(names)} (looked in {_where(root, subdirs)})")
    parts: dict[str, list[np.ndarray]] = {"images": [], "labels": []}
    out = {}
    for n in names:
        try:
            with open(folder / n, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError) as e:
            raise InputError(f"cannot read {folder / n}: {type(e).__name__}") from None
        parts["images"].append(data)
        parts["labels"].append(labels)
    out["train_images"] = np.concatenate(parts["images"][:5])
    out["train_labels"] = np.concatenate(parts["labels"][:5])
    out["test_images"], out["test_labels"] = parts["images"][5], parts["labels"][5]
    return out


def _load_svhn(root: Path) -> dict[str, np.ndarray]:
    subdirs = ("", "svhn", "SVHN")
    names = ("train_32x32.mat", "test_32x32.mat")
    folder = next((root / s for s in subdirs if all((root / s / n).is_file() for n in names)), None)
    if folder is None:
        raise InputError(f"SVHN files missing: {', '.join(names)} (looked in {_where(root, subdirs)})")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise InputError("reading SVHN needs scipy: pip install scipy") from None
    out: dict[str, np.ndarray] = {}
    for split, n in zip(("train", "test"), names, strict=True):
        try:
            mat = loadmat(folder / n)
            images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
            labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10  # the digit 0 is stored as 10
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"cannot read {folder / n}: {type(e).__name__}") from None
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


_LOADERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    "mnist": _idx_loader("MNIST", ("", "mnist", "MNIST/raw", "MNIST")),
    "fashion-mnist": _idx_loader("Fashion-MNIST", ("", "fashion-mnist", "FashionMNIST/raw", "FashionMNIST")),
    "cifar10": _load_cifar10,
    "svhn": _load_svhn,
}


def _load_mnist_mini() -> dict[str, np.ndarray]:
    with np.load(_HERE / "mnist_mini.npz") as f:
        return {k: f[k] for k in MNIST_FILES}


SOURCES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "mnist": ("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/",
              tuple(stem + ".gz" for stem in MNIST_FILES.values())),
    "fashion-mnist": ("fashion-mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      tuple(stem + ".gz" for stem in MNIST_FILES.values())),
    "cifar10": ("", "https://www.cs.toronto.edu/~kriz/", ("cifar-10-python.tar.gz",)),
    "svhn": ("svhn", "http://ufldl.stanford.edu/housenumbers/", ("train_32x32.mat", "test_32x32.mat")),
}
"""Data set → (folder under ``--data-dir``, base address, files) for ``--download``."""


def download(name: str, data_dir: str | Path, base_url: str | None = None) -> Path:
    """Fetch the files of ``name`` into ``data_dir`` (each written atomically; CIFAR-10's archive unpacked).

    Files already there are kept. Raises :class:`InputError` with the address that failed.
    """
    import tarfile
    import tempfile
    import urllib.request

    if name not in SOURCES:
        raise InputError(f"nothing to download for {name!r}; downloadable: {', '.join(SOURCES)}")
    sub, base, files = SOURCES[name]
    folder = Path(data_dir) / sub
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        target = folder / file
        if target.exists() or (file.endswith(".tar.gz") and (folder / "cifar-10-batches-py").is_dir()):
            continue
        url = (base_url or base) + file
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{file}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, target)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise InputError(f"cannot download {url}: {e}") from None
        if file.endswith(".tar.gz"):
            with tarfile.open(target) as archive:
                safe: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                archive.extractall(folder, **safe)
            target.unlink()
    return folder


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
    arrays = _load_mnist_mini() if name == "mnist-mini" else _LOADERS[name](_root(name, data_dir))
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
