"""Lightning DataModules: MNIST, CIFAR-10, CelebA, offline digits, image folders, 2-D toy sets, and
the bases a user project subclasses: ImageDataModule (images) and PointsDataModule (points).

The names below are imported on first use (PEP 562), so the Lightning-free parts of this package (image files
and datasets, file formats) load without Lightning: ``ddpm-fid`` reads image folders and starts in ~2 s."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the submodule that defines it
_EXPORTS = {
    "CelebADataModule": "datamodules",
    "CIFAR10DataModule": "datamodules",
    "DigitsDataModule": "datamodules",
    "ImageDataModule": "datamodules",
    "ImageFolderDataModule": "datamodules",
    "MNISTDataModule": "datamodules",
    "DatasetFilesError": "formats",
    "DatasetMissingError": "formats",
    "PointsDataModule": "points",
    "TOY_DATASETS": "toy2d",
    "Toy2DDataModule": "toy2d",
    "make_toy_points": "toy2d",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
