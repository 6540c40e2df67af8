"""2-D toy data sets (swiss roll, two moons, S-curve) from scikit-learn's generators, standardised with the
training split's mean and std so that N(0, I) is the natural prior scale."""

from __future__ import annotations

import numpy as np

from .points import PointsDataModule

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


class Toy2DDataModule(PointsDataModule):
    """Swiss roll, two moons or S-curve (``name``), with the generator's ``noise`` (None: its default)."""

    sample_shape = (2,)

    def __init__(self, name: str = "swiss_roll", noise: float | None = None, **kwargs) -> None:
        if name not in TOY_DATASETS:
            raise ValueError(f"Unknown toy data set {name!r}; choose one of: {', '.join(TOY_DATASETS)} (data.name).")
        self.name = name  # before the base's checks, which name the data set
        super().__init__(**kwargs)
        self.noise = noise

    def draw(self, n: int, seed: int) -> np.ndarray:
        return make_toy_points(self.name, n, seed, self.noise)
