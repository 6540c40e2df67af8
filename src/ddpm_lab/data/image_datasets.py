"""Image datasets that yield uint8 (C, H, W) tensors, and the wrapper that turns them into training inputs.

uint8 is the common currency: FID reference statistics are computed on the unaugmented uint8 images, and
training reads the same images through ``DiffusionImages`` (scaled to [-1, 1], optionally flipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .formats import DatasetFilesError

# The image files an image folder (ImageFolderDataModule, ddpm-fid) is made of.
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursive, by extension, case-insensitive), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, C, H, W) to (N, C, size, size) with antialiased bilinear filtering, rounding back."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    tensor = torch.from_numpy(np.array(images, copy=True, order="C")).float()
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8).numpy()


class ArrayImages(Dataset):
    """In-memory uint8 images (N, C, H, W); ``labels`` (N,) class indices where the data set has them."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {images.shape}")
        self.images = torch.from_numpy(np.array(images, copy=True, order="C"))
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError(f"expected {len(self.images)} labels, got shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def check_image_files(files: Sequence[Path], what: str) -> None:
    """Open every file's header (cheap: PIL reads the size and format, not the pixels) and raise one
    DatasetFilesError listing all that are not images, before any long work starts."""
    bad = []
    for path in files:
        try:
            with Image.open(path) as img:
                img.size  # noqa: B018 - the header is parsed on open; size forces nothing more
        except (OSError, UnidentifiedImageError, ValueError) as err:
            bad.append(f"{path} ({type(err).__name__})")
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DatasetFilesError(
            f"{len(bad)} of the {len(files)} files of {what} are not readable images: {shown}. Remove or replace them."
        )


class FileImages(Dataset):
    """Images read from files on access: centre-cropped (to ``crop_size``, or the largest square) and resized."""

    def __init__(self, files: Sequence[Path], image_size: int, channels: int = 3, crop_size: int | None = None) -> None:
        self.files = list(files)
        self.image_size = image_size
        self.mode = {1: "L", 3: "RGB"}[channels]
        self.crop_size = crop_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.files[index]
        try:
            with Image.open(path) as img:
                img = img.convert(self.mode)
                side = self.crop_size or min(img.size)
                left, top = (img.width - side) // 2, (img.height - side) // 2
                img = img.crop((left, top, left + side, top + side))
                img = img.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC, reducing_gap=None)
                array = np.asarray(img, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as err:
            raise DatasetFilesError(f"cannot read image {path}: {err}. Remove or replace the file.") from err
        return torch.from_numpy(array.reshape(self.image_size, self.image_size, -1).copy()).permute(2, 0, 1)


class DiffusionImages(Dataset):
    """Training view of uint8 images: float32 in [-1, 1], randomly mirrored left-right if ``random_flip``;
    with ``with_labels`` each item is (image, class index) for class-conditional training."""

    def __init__(self, images: Dataset, random_flip: bool = False, with_labels: bool = False) -> None:
        self.images = images
        self.random_flip = random_flip
        self.labels = getattr(images, "labels", None) if with_labels else None
        if with_labels and self.labels is None:
            raise ValueError(f"{type(images).__name__} has no class labels to condition on.")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int | tuple[int, bool]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # (index, flip) pairs come from ResumableSampler, which decides flips from its own seeded generator;
        # a plain index flips with the global RNG.
        index, flip = index if isinstance(index, tuple) else (index, self.random_flip and bool(torch.rand(()) < 0.5))
        x = self.images[index].float() / 127.5 - 1.0
        x = x.flip(-1) if flip and self.random_flip else x
        return x if self.labels is None else (x, self.labels[index])
