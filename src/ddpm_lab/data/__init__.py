"""Lightning DataModules: MNIST, CIFAR-10, CelebA, offline digits, image folders and 2-D toy sets."""

from .datamodules import (
    CelebADataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from .formats import DatasetFilesError, DatasetMissingError
from .toy2d import TOY_DATASETS, Toy2DDataModule, make_toy_points

__all__ = [
    "TOY_DATASETS",
    "CIFAR10DataModule",
    "CelebADataModule",
    "DatasetFilesError",
    "DatasetMissingError",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "Toy2DDataModule",
    "make_toy_points",
]
