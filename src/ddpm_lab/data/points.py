"""Point data (B, D): the base DataModule that 2-D toys and a user's own point data sets subclass. A subclass
implements ``draw(n, seed) -> (n, D) array`` and sets ``sample_shape = (D,)``; splits are drawn with different
seeds and standardised with the training split's mean and std, so that N(0, I) is the natural prior scale."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from ..checks import is_int
from .labels import check_conditional
from .resumable import ResumableDataLoader, ResumableSampler, eval_loader


class PointsDataModule(L.LightningDataModule):
    """Train/val/test splits of ``draw``'s points; batches are (B, D) float tensors (no labels)."""

    name = "points"
    kind = "points"
    val_split = "val"
    reference_split = "val"
    sample_shape: tuple[int, ...] = (2,)
    # The data's standard deviation, EDM's sigma_data (process=edm reads it): 1 after standardisation.
    sigma_data = 1.0

    def __init__(
        self,
        num_train: int = 20_000,
        num_val: int = 2_000,
        num_test: int = 2_000,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        conditional: bool = False,
    ) -> None:
        super().__init__()
        check_conditional(self.name, None, conditional)  # points carry no class labels
        for key, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if not is_int(value) or value < 2:
                raise ValueError(f"data.{key}={value!r} is not valid: use an integer >= 2.")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}.")
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._points: dict[str, torch.Tensor] = {}

    def draw(self, n: int, seed: int) -> np.ndarray:
        """(n, D) points of the data set, unnormalised, drawn from ``seed``."""
        raise NotImplementedError(f"{type(self).__name__} must implement draw(n, seed) -> (n, D) array")

    def points(self, split: str) -> torch.Tensor:
        """Standardised (N, D) float32 points of ``split``."""
        if not self._points:
            raw = {
                s: np.asarray(self.draw(n, self.seed + i), np.float32) for i, (s, n) in enumerate(self.sizes.items())
            }
            if raw["train"].shape[1:] != tuple(self.sample_shape):
                raise ValueError(
                    f"{type(self).__name__}.draw returned points of shape {raw['train'].shape}, but its "
                    f"sample_shape is {tuple(self.sample_shape)}: set sample_shape = (D,) on the class."
                )
            mean, std = raw["train"].mean(axis=0), raw["train"].std(axis=0)
            self._points = {s: torch.from_numpy((p - mean) / std) for s, p in raw.items()}
        return self._points[split]

    def setup(self, stage: str | None = None) -> None:
        self.points("train")  # draws and standardises every split once

    def _eval_loader(self, split: str) -> DataLoader:
        points = _Points(self.points(split))
        return eval_loader(points, self.batch_size, self.seed, trainer=self.trainer, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        points = _Points(self.points("train"))
        sampler = ResumableSampler(len(points), seed=self.seed, shuffle=True)
        return ResumableDataLoader(
            points,
            sampler,
            self.batch_size,
            trainer_ref=self,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


class _Points(torch.utils.data.Dataset):
    """Points (N, D) by index, or by ResumableSampler's (index, flip) pairs (points are never flipped)."""

    def __init__(self, points: torch.Tensor) -> None:
        self.points = points

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, item: int | tuple[int, bool]) -> torch.Tensor:
        return self.points[item[0] if isinstance(item, tuple) else item]
