"""2-D toy data sets (swiss roll, two moons, S-curve) from scikit-learn's generators, standardised with the
training split's mean and std so that N(0, I) is the natural prior scale."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from .labels import check_conditional
from .resumable import ResumableDataLoader, ResumableSampler, eval_loader

TOY_DATASETS = ("swiss_roll", "moons", "s_curve")


def make_toy_points(name: str, n: int, seed: int, noise: float | None = None) -> np.ndarray:
    """(n, 2) float32 points of the named set, unnormalised."""
    from sklearn import datasets

    if name == "swiss_roll":
        points = datasets.make_swiss_roll(n, noise=0.3 if noise is None else noise, random_state=seed)[0][:, [0, 2]]
    elif name == "moons":
        points = datasets.make_moons(n, noise=0.05 if noise is None else noise, random_state=seed)[0]
    elif name == "s_curve":
        points = datasets.make_s_curve(n, noise=0.05 if noise is None else noise, random_state=seed)[0][:, [0, 2]]
    else:
        raise ValueError(f"Unknown toy data set {name!r}; choose one of: {', '.join(TOY_DATASETS)} (data.name).")
    return points.astype(np.float32)


class Toy2DDataModule(L.LightningDataModule):
    """Train/val/test splits drawn with different seeds; batches are (B, 2) float tensors."""

    kind = "points"
    val_split = "val"
    reference_split = "val"
    sample_shape = (2,)

    def __init__(
        self,
        name: str = "swiss_roll",
        num_train: int = 20_000,
        num_val: int = 2_000,
        num_test: int = 2_000,
        noise: float | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        conditional: bool = False,
    ) -> None:
        super().__init__()
        check_conditional(name, None, conditional)  # 2-D points carry no class labels
        if name not in TOY_DATASETS:
            raise ValueError(f"Unknown toy data set {name!r}; choose one of: {', '.join(TOY_DATASETS)} (data.name).")
        self.name = name
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.noise = noise
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._points: dict[str, torch.Tensor] = {}

    def points(self, split: str) -> torch.Tensor:
        """Standardised (N, 2) float32 points of ``split``."""
        if not self._points:
            raw = {
                s: make_toy_points(self.name, n, self.seed + i, self.noise)
                for i, (s, n) in enumerate(self.sizes.items())
            }
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
