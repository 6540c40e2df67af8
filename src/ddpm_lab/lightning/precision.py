"""Sampling at the run's precision: FID sampling runs the network thousands of times, outside Lightning's
training/validation steps (so outside its autocast); a bf16-mixed run should sample in bf16 too."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

MIXED_PRECISIONS = ("bf16-mixed", "16-mixed")


class AutocastNetwork:
    """Calls ``network`` inside ``context()`` (e.g. the trainer's autocast) and returns float32 (B, C, H, W), so the
    sampler's update arithmetic (float64 tables) stays in full precision; only the network runs mixed."""

    def __init__(self, network: Callable, context: Callable[[], AbstractContextManager]) -> None:
        self.network, self.context = network, context

    def __call__(self, *args: Any) -> torch.Tensor:
        with self.context():
            return self.network(*args).float()


def at_run_precision(network: Callable, trainer: Any) -> Callable:
    """``network`` wrapped in the trainer's mixed-precision context where the run trains mixed, else as is."""
    if trainer is None or str(getattr(trainer, "precision", "32-true")) not in MIXED_PRECISIONS:
        return network
    return AutocastNetwork(network, trainer.precision_plugin.forward_context)
