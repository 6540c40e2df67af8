"""Concentric rings in 2-D: our own data set, on ddpm-lab's PointsDataModule (splits, standardisation,
resumable loaders and what the 2-D metrics read all come with it)."""

from __future__ import annotations

import numpy as np

from ddpm_lab.data import PointsDataModule


class RingsDataModule(PointsDataModule):
    """``num_rings`` circles of radius 1, 2, ..., equally populated, with Gaussian jitter ``noise``."""

    name = "rings"
    sample_shape = (2,)

    def __init__(self, num_rings: int = 2, noise: float = 0.05, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_rings < 1:
            raise ValueError(f"data.num_rings must be >= 1, got {num_rings}.")
        self.num_rings, self.noise = num_rings, noise

    def draw(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        radius = rng.integers(1, self.num_rings + 1, n)
        angle = rng.uniform(0.0, 2.0 * np.pi, n)
        points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        return points + self.noise * rng.standard_normal((n, 2))
