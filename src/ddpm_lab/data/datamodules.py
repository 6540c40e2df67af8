"""Lightning DataModules for image data: MNIST, CIFAR-10, CelebA (torchvision downloads), scikit-learn's
digits (offline) and any folder of images. Batches are float tensors (B, C, H, W) in [-1, 1]; with
``conditional=True`` (labelled data sets: ``num_classes`` set) they are (images, class indices (B,))."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .formats import (
    CELEBA_LAYOUT,
    CIFAR10_LAYOUT,
    MNIST_LAYOUT,
    DatasetFilesError,
    DatasetMissingError,
    celeba_files,
    load_cifar10,
    load_mnist,
)
from .image_datasets import (
    IMAGE_EXTENSIONS,
    ArrayImages,
    DiffusionImages,
    FileImages,
    check_image_files,
    image_files,
    resize_uint8,
)
from .labels import check_conditional
from .resumable import ResumableDataLoader, ResumableSampler, eval_loader


class ImageDataModule(L.LightningDataModule):
    """Base: subclasses set ``name``, ``channels`` and implement ``load_split(split)`` -> uint8 Dataset.

    ``val_split`` is the split used for validation (loss, NLL); ``reference_split`` the one FID compares
    against (DDPM's CIFAR-10 FID of 3.17 is against the training set). ``num_classes`` is set by data sets
    with class labels, which ``conditional=True`` then yields with every image.
    """

    name = "images"
    layout = "{root}"
    kind = "image"
    channels = 3
    num_classes: int | None = None
    val_split = "test"
    reference_split = "train"

    def __init__(
        self,
        data_dir: str | Path = "data",
        image_size: int = 32,
        batch_size: int = 128,
        num_workers: int = 0,
        random_flip: bool = False,
        download: bool = True,
        pin_memory: bool | None = None,
        seed: int = 0,
        conditional: bool = False,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.conditional = check_conditional(self.name, self.num_classes, conditional)
        if image_size < 4:
            raise ValueError(f"data.image_size must be >= 4, got {image_size}.")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}.")
        self.data_dir = Path(data_dir)
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.random_flip = random_flip
        self.download = download
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._splits: dict[str, Dataset] = {}

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    def load_split(self, split: str) -> Dataset:
        raise NotImplementedError

    def fetch(self) -> None:
        """Download the files into ``data_dir`` (subclasses with a download)."""

    def prepare_data(self) -> None:
        """Download only if the training files are missing; a failed download is one clear error."""
        try:
            self.images("train")
            return
        except DatasetMissingError:
            if not self.download:
                return  # setup() raises the error that says where the files must go
        try:
            self.fetch()
        except Exception as err:
            raise DatasetFilesError(
                f"could not download {self.name} into {self.data_dir} ({type(err).__name__}: {err}). Without "
                f"network access, put the files there yourself: {self.layout.format(root=self.data_dir)}."
            ) from err

    def images(self, split: str) -> Dataset:
        """Unaugmented uint8 (C, H, W) images of ``split``, loaded once."""
        if split not in self._splits:
            self._splits[split] = self.load_split(split)
        return self._splits[split]

    def setup(self, stage: str | None = None) -> None:
        self.train_set = DiffusionImages(self.images("train"), self.random_flip, with_labels=self.conditional)
        self.val_set = DiffusionImages(self.images(self.val_split), with_labels=self.conditional)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        return eval_loader(
            dataset,
            self.batch_size,
            self.seed,
            trainer=self.trainer,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        sampler = ResumableSampler(len(self.train_set), seed=self.seed, shuffle=True, random_flip=self.random_flip)
        return ResumableDataLoader(
            self.train_set,
            sampler,
            self.batch_size,
            trainer_ref=self,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(DiffusionImages(self.images("test"), with_labels=self.conditional))


class MNISTDataModule(ImageDataModule):
    name, channels, layout, num_classes = "mnist", 1, MNIST_LAYOUT, 10

    def __init__(self, image_size: int = 28, **kwargs) -> None:
        super().__init__(image_size=image_size, **kwargs)

    def fetch(self) -> None:
        from torchvision.datasets import MNIST

        for train in (True, False):
            MNIST(str(self.data_dir), train=train, download=True)

    def load_split(self, split: str) -> Dataset:
        if not self.conditional:
            return ArrayImages(resize_uint8(load_mnist(self.data_dir, split), self.image_size))
        images, labels = load_mnist(self.data_dir, split, with_labels=True)
        return ArrayImages(resize_uint8(images, self.image_size), labels)


class CIFAR10DataModule(ImageDataModule):
    name, layout, num_classes = "cifar10", CIFAR10_LAYOUT, 10

    def __init__(self, random_flip: bool = True, **kwargs) -> None:
        super().__init__(random_flip=random_flip, **kwargs)

    def fetch(self) -> None:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(self.data_dir), train=True, download=True)

    def load_split(self, split: str) -> Dataset:
        images, labels = load_cifar10(self.data_dir, split, with_labels=True)
        return ArrayImages(resize_uint8(images, self.image_size), labels)


class CelebADataModule(ImageDataModule):
    """Aligned CelebA, centre-cropped to ``crop_size`` (140, as in DDIM's 64x64 setup) then resized."""

    name, val_split, layout = "celeba", "valid", CELEBA_LAYOUT

    def __init__(self, image_size: int = 64, crop_size: int = 140, random_flip: bool = True, **kwargs) -> None:
        super().__init__(image_size=image_size, random_flip=random_flip, **kwargs)
        self.crop_size = crop_size

    def fetch(self) -> None:
        from torchvision.datasets import CelebA

        CelebA(str(self.data_dir), split="all", target_type=[], download=True)

    def load_split(self, split: str) -> Dataset:
        return FileImages(celeba_files(self.data_dir, split), self.image_size, 3, self.crop_size)


class DigitsDataModule(ImageDataModule):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), upsampled to ``image_size``.

    A fixed, seeded ``val_fraction`` of the images is held out for validation; "test" is the same split.
    """

    name, channels, val_split, num_classes = "digits", 1, "val", 10

    def __init__(self, image_size: int = 16, val_fraction: float = 0.1, download: bool = False, **kwargs) -> None:
        super().__init__(image_size=image_size, download=download, **kwargs)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}.")
        self.val_fraction = val_fraction

    def load_split(self, split: str) -> Dataset:
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = digits.images  # (1797, 8, 8) with values 0..16
        images = resize_uint8(np.round(pixels * (255.0 / 16.0)).astype(np.uint8)[:, None], self.image_size)
        order = np.random.default_rng(0).permutation(len(images))
        num_val = max(1, round(self.val_fraction * len(images)))
        chosen = np.sort(order[num_val:] if split == "train" else order[:num_val])
        return ArrayImages(images[chosen], digits.target[chosen])


class ImageFolderDataModule(ImageDataModule):
    """Any folder of images (searched recursively), centre-cropped to a square and resized; a seeded
    ``val_fraction`` is held out."""

    name, val_split = "image_folder", "val"

    def __init__(self, path: str | Path, channels: int = 3, val_fraction: float = 0.05, **kwargs) -> None:
        kwargs.setdefault("download", False)
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 (grey) or 3 (RGB), got {channels}.")
        if not Path(path).is_dir():
            raise DatasetFilesError(f"image folder {path} does not exist (set data.path=/your/images).")
        self.path = Path(path)
        self.channels = channels
        self.val_fraction = val_fraction

    def load_split(self, split: str) -> Dataset:
        files = image_files(self.path)
        if len(files) < 2:
            raise DatasetFilesError(
                f"image folder {self.path} holds {len(files)} images ({', '.join(IMAGE_EXTENSIONS)}); "
                "at least 2 are needed."
            )
        if not self._splits:  # the first split loaded: every file at start-up, not one mid-training
            check_image_files(files, f"image folder {self.path}")
        dataset = FileImages(files, self.image_size, self.channels)
        order = np.random.default_rng(0).permutation(len(files))
        num_val = max(1, round(self.val_fraction * len(files)))
        chosen = order[num_val:] if split == "train" else order[:num_val]
        return Subset(dataset, np.sort(chosen).tolist())
