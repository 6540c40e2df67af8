"""Writers of tiny data sets in each data set's real on-disk format (what torchvision's download leaves)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def _idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def write_tiny_mnist(root: Path, n_train: int = 40, n_test: int = 16, gz: bool = True) -> Path:
    """MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; image i is filled with value 6*i."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.stack([np.full((28, 28), (6 * i) % 256, dtype=np.uint8) for i in range(n)])
        for name, payload in (
            (f"{prefix}-images-idx3-ubyte", _idx_images(images)),
            (f"{prefix}-labels-idx1-ubyte", _idx_labels(np.arange(n) % 10)),
        ):
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (raw / name).write_bytes(payload)
    return raw


def write_tiny_cifar10(root: Path, per_batch: int = 8, n_test: int = 8) -> Path:
    """cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} as pickled dicts (latin1 bytes keys)."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        batch = {
            "batch_label": name,
            "labels": list(rng.integers(0, 10, n)),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"{i}.png" for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    return folder


def write_tiny_celeba(root: Path, counts: tuple[int, int, int] = (10, 4, 4)) -> Path:
    """celeba/img_align_celeba/NNNNNN.jpg (178x218, like the aligned release) + list_eval_partition.txt."""
    folder = Path(root) / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    lines, index = [], 1
    for split, count in enumerate(counts):
        for _ in range(count):
            name = f"{index:06d}.jpg"
            colour = (index * 20 % 256, 100, 200)
            Image.new("RGB", (178, 218), colour).save(images / name)
            lines.append(f"{name} {split}")
            index += 1
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return folder
