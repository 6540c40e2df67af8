"""The network and DataModule contract (ddpm_lab.cli.contracts): a user class given by ``_target_`` that lacks
what ddpm-lab passes or reads stops at start-up with a message naming what is missing; one that meets it
trains with ddpm-lab's metrics and pictures unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ddpm_lab.cli.train import train
from ddpm_lab.cli.validation import ConfigError, validate_config
from ddpm_lab.data import PointsDataModule
from tests.conftest import compose_config

POINTS = ["experiment=toy_moons", "logger=csv"]


class PointNet(nn.Module):
    """Meets the contract: (B, 2) -> (B, 2) or (B, 4)."""

    def __init__(self, sample_shape: list[int], learned_variance: bool, width: int = 16, **unused) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(sample_shape[0] + 1, width), nn.SiLU(), nn.Linear(width, 2 * (1 + learned_variance))
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None].to(x.dtype) / 200], dim=1))


class NoVarianceNet(nn.Module):
    def __init__(self, sample_shape: list[int], hidden_dim: int = 8, num_layers: int = 1, time_embed_dim: int = 8):
        super().__init__()
        self.net = nn.Linear(2, 2)


class IgnoresVarianceNet(PointNet):
    def __init__(self, sample_shape: list[int], learned_variance: bool, **options) -> None:
        super().__init__(sample_shape, False, **options)


class NoLabelsNet(nn.Module):
    def __init__(self, sample_shape, learned_variance, hidden_dim=8, num_layers=1, time_embed_dim=8) -> None:
        super().__init__()


class Circle(PointsDataModule):
    """The unit circle; toy2d's data keys (name, noise) are taken as they come."""

    sample_shape = (2,)

    def __init__(self, name: str = "circle", noise: float | None = None, **options) -> None:
        self.name, self.noise = name, noise or 0.0
        super().__init__(**options)

    def draw(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        angle = rng.uniform(0, 2 * np.pi, n)
        return np.stack([np.cos(angle), np.sin(angle)], axis=1) + self.noise * rng.standard_normal((n, 2))


class ShapelessPoints(Circle):
    sample_shape = None
    kind = "points"


class NoPointsData:  # point data with a shape but nothing to read: every missing piece is named
    kind = "points"
    sample_shape = (2,)

    def __init__(self, **options) -> None:
        self.options = options


def check(overrides: list[str], tmp_path) -> None:
    validate_config(compose_config("train", tmp_path, overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            [f"model._target_={__name__}.NoVarianceNet"],
            r"model=tests.test_contracts.NoVarianceNet cannot be built by ddpm-lab: its constructor has no "
            r"learned_variance argument.*Net\(sample_shape=\[C, H, W\] or \[D\], learned_variance=bool",
        ),
        (
            [f"model._target_={__name__}.IgnoresVarianceNet", "variance=learned_range", "loss=hybrid"],
            r"IgnoresVarianceNet\(x_t, t\) must return a tensor of shape \(2, 4\) \(mean and variance halves.*"
            r"returned \(2, 2\)",
        ),
        (
            [
                "experiment=quickstart",
                "conditioning=class",
                "model=mlp",
                f"model._target_={__name__}.NoLabelsNet",
            ],
            r"its constructor has no num_classes argument \(this run is class-conditional: conditioning=class\)",
        ),
        (
            [f"data._target_={__name__}.ShapelessPoints"],
            r"data=ShapelessPoints lacks what ddpm-lab reads of a DataModule: sample_shape \(a tuple of positive ints",
        ),
        (
            [f"data._target_={__name__}.NoPointsData"],
            r"data=NoPointsData lacks.*train_dataloader\(\); val_dataloader\(\); "
            r"points \(read by SampleImagesCallback\); "
            r"points \(read by SampleDistanceCallback\); reference_split \(read by SampleDistanceCallback\)",
        ),
    ],
    ids=[
        "network-without-learned_variance",
        "wrong-output-shape",
        "conditional-without-num_classes",
        "data-without-sample_shape",
        "data-without-points",
    ],
)
def test_a_broken_contract_is_named_at_start_up(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check([*POINTS, *overrides], tmp_path)


@pytest.mark.slow
def test_own_network_and_data_train_with_our_metrics(tmp_path):
    cfg = compose_config(
        "train",
        tmp_path,
        [
            *POINTS,
            f"model._target_={__name__}.PointNet",
            f"data._target_={__name__}.Circle",
            "data.num_train=256",
            "data.num_val=64",
            "data.num_test=64",
            "trainer.max_steps=6",
            "trainer.val_check_interval=3",
            "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false",
            "callbacks.sample_distance.num_samples=64",
            "callbacks.sample_images.num_samples=16",
            "callbacks.sample_images.every_n_steps=6",
        ],
    )
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["global_step"] == 6
    assert np.isfinite(summary["final"]["val/sample_mmd2"])
    assert (tmp_path / "run" / "samples" / "last.png").is_file()
