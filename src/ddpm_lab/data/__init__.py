"""Lightning DataModules: MNIST, CIFAR-10, CelebA, offline digits, image folders, 2-D toy sets, and
the bases a user project subclasses: ImageDataModule (images) and PointsDataModule (points)."""

from .datamodules import (
    CelebADataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from .formats import DatasetFilesError, DatasetMissingError
from .points import PointsDataModule
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
    "PointsDataModule",
    "Toy2DDataModule",
    "make_toy_points",
]
