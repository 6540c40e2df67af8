"""Readers for the datasets' real on-disk formats, with errors that name the file and the expected layout.

torchvision downloads the files; these readers load them without torchvision's MD5 gate (so a user's own
copy, or a test's tiny copy, loads) and without executing pickled code (CIFAR-10's batches are pickles: a
restricted unpickler accepts only the NumPy arrays, lists, dicts and bytes those files contain).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import ClassVar

import numpy as np


class DatasetFilesError(FileNotFoundError):
    """A dataset's files are missing or unreadable; the message says where they must go."""


class DatasetMissingError(DatasetFilesError):
    """A dataset's files are not there at all (as opposed to present but damaged)."""


MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_LAYOUT = (
    "{root}/MNIST/raw/ holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte (each may also be the original .gz)"
)
CIFAR10_LAYOUT = (
    "{root}/cifar-10-batches-py/ holding data_batch_1 ... data_batch_5, test_batch and batches.meta (the "
    "extracted cifar-10-python.tar.gz)"
)
CELEBA_LAYOUT = (
    "{root}/celeba/ holding img_align_celeba/ (000001.jpg, ...) and list_eval_partition.txt (the aligned, "
    "cropped CelebA release)"
)


def _open_maybe_gz(path: Path) -> bytes:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.exists():
            data = candidate.read_bytes()
            if candidate.suffix == ".gz":
                try:
                    data = gzip.decompress(data)
                except (OSError, EOFError) as err:
                    raise DatasetFilesError(f"{candidate} is not a valid gzip file ({err}).") from err
            return data
    raise FileNotFoundError(path)


def read_idx_images(path: Path) -> np.ndarray:
    """Read an IDX3 image file (magic 2051, big-endian counts) into uint8 (N, H, W)."""
    data = _open_maybe_gz(path)
    if len(data) < 16:
        raise DatasetFilesError(f"{path} is truncated: {len(data)} bytes, shorter than the 16-byte IDX header.")
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 2051:
        raise DatasetFilesError(f"{path} is not an IDX image file (magic number {magic}, expected 2051).")
    expected = 16 + count * rows * cols
    if len(data) != expected:
        raise DatasetFilesError(
            f"{path} is truncated or corrupted: the header announces {count} images of {rows}x{cols} "
            f"({expected} bytes) but the file has {len(data)} bytes. Delete it and download again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    """Read an IDX1 label file (magic 2049) into int64 (N,)."""
    data = _open_maybe_gz(path)
    magic, count = struct.unpack(">II", data[:8]) if len(data) >= 8 else (None, 0)
    if magic != 2049 or len(data) != 8 + count:
        raise DatasetFilesError(
            f"{path} is not a complete IDX label file (magic {magic}, expected 2049; {len(data)} bytes for "
            f"{count} labels). Delete it and download again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)


def load_mnist(root: Path, split: str, with_labels: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, 28, 28) MNIST images of ``split`` ("train" or "test"), and int64 (N,) labels if asked."""
    raw = Path(root) / "MNIST" / "raw"
    paths = [raw / name for name in MNIST_FILES[split][: 2 if with_labels else 1]]
    try:
        images = read_idx_images(paths[0])[:, None]
        labels = read_idx_labels(paths[1]) if with_labels else None
    except FileNotFoundError as err:
        if isinstance(err, DatasetFilesError):
            raise
        raise DatasetMissingError(
            f"MNIST file {err.filename} (or its .gz) not found. Expected layout: {MNIST_LAYOUT.format(root=root)}. "
            "Set data.download=true with network access, or copy the files there."
        ) from None
    if labels is None:
        return images
    if len(labels) != len(images):
        raise DatasetFilesError(f"{paths[1]} has {len(labels)} labels for {len(images)} images in {paths[0]}.")
    return images, labels


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only; any other global (e.g. os.system) is refused."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2; only transforms data
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR-10 batch")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) images and int64 (N,) labels of one CIFAR-10 python batch file."""
    try:
        with open(path, "rb") as handle:
            batch = _ArrayOnlyUnpickler(handle, encoding="latin1").load()
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch["labels"], dtype=np.int64)
        if labels.shape != (len(data),):
            raise ValueError(f"{labels.size} labels for {len(data)} images")
        return data, labels
    except FileNotFoundError:
        raise
    except Exception as err:  # any decoding failure means a damaged file
        raise DatasetFilesError(
            f"{path} is not a readable CIFAR-10 batch ({type(err).__name__}: {err}). Delete "
            f"{Path(path).parent} and download again."
        ) from err


def load_cifar10(root: Path, split: str, with_labels: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) CIFAR-10 images of ``split``, and int64 (N,) labels if asked."""
    folder = Path(root) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise DatasetMissingError(
            f"CIFAR-10 files {missing} not found in {folder}. Expected layout: "
            f"{CIFAR10_LAYOUT.format(root=root)}. Set data.download=true with network access, or copy them there."
        )
    images, labels = zip(*(read_cifar_batch(folder / n) for n in names), strict=True)
    return (np.concatenate(images), np.concatenate(labels)) if with_labels else np.concatenate(images)


CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2}


def celeba_files(root: Path, split: str) -> list[Path]:
    """Image paths of a CelebA split, from list_eval_partition.txt ("<file> <0|1|2>" per line)."""
    folder = Path(root) / "celeba"
    partition = folder / "list_eval_partition.txt"
    images = folder / "img_align_celeba"
    if not partition.exists() or not images.is_dir():
        raise DatasetMissingError(
            f"CelebA not found under {folder}. Expected layout: {CELEBA_LAYOUT.format(root=root)}. "
            "torchvision's download (data.download=true) often hits Google Drive's quota; the files can be "
            "downloaded by hand from the CelebA site."
        )
    wanted, files = CELEBA_SPLITS[split], []
    for number, line in enumerate(partition.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DatasetFilesError(f"{partition} line {number} is malformed: {line!r} (expected '<file> <0|1|2>').")
        if int(parts[1]) == wanted:
            files.append(images / parts[0])
    absent = [f for f in files[:5] if not f.exists()] or [f for f in files if not f.exists()]
    if absent:
        raise DatasetFilesError(f"{len(absent)} CelebA images listed in {partition} are missing, e.g. {absent[0]}.")
    return files
