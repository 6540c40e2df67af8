"""Callbacks that look at samples during training: pictures at an interval, and the 2-D sample distance."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from ..metrics import mmd_distance, mmd_squared
from ..visualize import save_image_grid, save_points_figure, save_trajectory_strip


def log_picture(trainer: L.Trainer, key: str, picture: np.ndarray) -> None:
    """Send an RGB uint8 (H, W, 3) picture to every logger that takes images (W&B, TensorBoard)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[picture], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, picture, trainer.global_step, dataformats="HWC")


class SampleImagesCallback(L.Callback):
    """Every ``every_n_steps`` training steps and at the end of training, draw ``num_samples`` samples from
    the EMA network with a fixed seed (the same noise each time, so pictures show progress) and write
    ``samples/step_XXXXXXX.png`` + ``samples/trajectory_step_XXXXXXX.png`` (``last.png``/``trajectory_last.png``
    too), logging both to every image logger. For 2-D data: a scatter over held-out data with reverse paths.
    A class-conditional model draws every class equally often, one class per grid column.
    """

    # What it reads of the DataModule, by data kind (checked at start-up: ddpm_lab.cli.contracts).
    datamodule_needs: ClassVar[dict[str, tuple[str, ...]]] = {"points": ("points",)}

    def __init__(
        self,
        output_dir: str | Path,
        every_n_steps: int = 5000,
        num_samples: int = 64,
        trajectory_rows: int = 8,
        seed: int = 0,
        scale: int = 1,
    ) -> None:
        super().__init__()
        if every_n_steps < 1 or num_samples < 1:
            raise ValueError("callbacks.sample_images: every_n_steps and num_samples must be >= 1.")
        self.output_dir = Path(output_dir)
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.trajectory_rows = trajectory_rows
        self.seed = seed
        self.scale = scale
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.draw(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.draw(trainer, pl_module)

    @rank_zero_only
    def draw(self, trainer: L.Trainer, pl_module) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return
        self._last_step = step
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        samples, trajectory = pl_module.generate(self.num_samples, generator=generator, return_trajectory=True)
        if len(pl_module.sample_shape) == 3:
            nrow = getattr(pl_module, "num_classes", None)  # columns = classes (labels 0, 1, ..., C-1, 0, ...)
            grid = save_image_grid(samples, self.output_dir / f"step_{step:07d}.png", nrow, self.scale)
            save_image_grid(samples, self.output_dir / "last.png", nrow, self.scale)
            strip = save_trajectory_strip(
                trajectory, self.output_dir / f"trajectory_step_{step:07d}.png", self.trajectory_rows
            )
            save_trajectory_strip(trajectory, self.output_dir / "trajectory_last.png", self.trajectory_rows)
        else:
            data = trainer.datamodule.points("val")
            grid = save_points_figure(
                samples, data, self.output_dir / f"step_{step:07d}.png", trajectory, title=f"step {step}"
            )
            save_points_figure(samples, data, self.output_dir / "last.png", trajectory, title=f"step {step}")
            strip = None
        log_picture(trainer, "samples", grid)
        if strip is not None:
            log_picture(trainer, "trajectory", strip)


class SampleDistanceCallback(L.Callback):
    """For 2-D data: at every validation, the MMD (``ddpm_lab.metrics.mmd_distance``) between ``num_samples``
    generated points (EMA weights) and the held-out validation points, logged as ``val/sample_distance``
    (and its signed square ``val/sample_mmd2``, which still tells converged runs apart); the
    same distance for as many N(0, I) samples is logged as ``val/sample_distance_gaussian`` for scale."""

    datamodule_needs: ClassVar[dict[str, tuple[str, ...]]] = {"points": ("points", "reference_split")}

    def __init__(self, num_samples: int = 2000, seed: int = 1) -> None:
        super().__init__()
        if num_samples < 2:
            raise ValueError(f"callbacks.sample_distance.num_samples must be >= 2, got {num_samples}.")
        self.num_samples = num_samples
        self.seed = seed

    @staticmethod
    def logged_metrics(options: Mapping[str, Any]) -> tuple[str, ...]:
        return ("val/sample_distance", "val/sample_mmd2", "val/sample_distance_gaussian")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        data = trainer.datamodule.points(trainer.datamodule.reference_split)
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        samples = pl_module.generate(self.num_samples, generator=generator)
        # Every rank draws the same samples from the same seed, so the value needs no reduction.
        mmd2 = mmd_squared(samples, data)
        pl_module.log("val/sample_distance", max(mmd2, 0.0) ** 0.5, sync_dist=False)
        pl_module.log("val/sample_mmd2", mmd2, sync_dist=False)
        noise = torch.randn(self.num_samples, data.shape[1], generator=torch.Generator().manual_seed(self.seed))
        pl_module.log("val/sample_distance_gaussian", mmd_distance(noise, data), sync_dist=False)
