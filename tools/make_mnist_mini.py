"""Build the embedded ``mnist-mini`` data set from the official MNIST idx files.

``mnist-mini`` is deterministic and class-balanced: the first 1,000 training images of each digit and the
first 200 test images of each digit, in the official order of each split. Usage::

    python tools/make_mnist_mini.py PATH/TO/mnist src/mondeq/data/mnist_mini.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mondeq.data import read_idx


def balanced_subset(images: np.ndarray, labels: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)]))
    return images[keep], labels[keep]


def main(src: str, dst: str) -> None:
    root = Path(src)
    train = balanced_subset(read_idx(root / "train-images-idx3-ubyte.gz"),
                            read_idx(root / "train-labels-idx1-ubyte.gz"), 1000)
    test = balanced_subset(read_idx(root / "t10k-images-idx3-ubyte.gz"),
                           read_idx(root / "t10k-labels-idx1-ubyte.gz"), 200)
    np.savez_compressed(dst, train_images=train[0], train_labels=train[1],
                        test_images=test[0], test_labels=test[1])


if __name__ == "__main__":
    main(*sys.argv[1:3])
