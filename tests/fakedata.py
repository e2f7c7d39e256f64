"""Fake original datasets in their real on-disk formats, for tests (torchvision-style)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx_images(path: Path, images: np.ndarray) -> None:
    header = struct.pack(">IIII", 2051, len(images), images.shape[1], images.shape[2])
    with gzip.open(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def make_fashion_mnist(root: Path, per_class: int = 20, test_per_class: int = 5, seed: int = 0) -> Path:
    """Write Fashion-MNIST-format idx files under ``root/FashionMNIST/raw``.

    Each class is a bright rectangle at its own place on a dark noisy background, so a small
    ConvNet learns it in one epoch and patch scores differ between images.
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, count, prefix in (("train", per_class, "train"), ("test", test_per_class, "t10k")):
        labels = np.repeat(np.arange(10), count)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(len(labels), 28, 28))
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            top, left = 2 + row * 12 + rng.integers(0, 3), 1 + col * 5 + rng.integers(0, 2)
            images[i, top:top + 10, left:left + 4] = rng.integers(180, 256)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return Path(root)
