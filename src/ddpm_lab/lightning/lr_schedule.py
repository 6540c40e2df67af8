"""The learning-rate schedule: a linear warm-up, then constant (DDPM), cosine or linear decay to
``min_ratio`` x the base rate at the last step (Lightning's ``estimated_stepping_batches``, so it holds for
step- and epoch-bounded runs alike)."""

from __future__ import annotations

import math

import torch

from ..checks import is_int

LR_SCHEDULES = ("constant", "cosine", "linear")


def check_lr_schedule(schedule: str, warmup_steps: int, min_ratio: float) -> None:
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"module.lr_schedule={schedule!r} is not valid; allowed values: {', '.join(LR_SCHEDULES)}.")
    if not is_int(warmup_steps) or warmup_steps < 0:
        raise ValueError(f"module.lr_warmup_steps={warmup_steps!r} is not valid: use an integer >= 0 (0 = no warm-up).")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"module.lr_min_ratio={min_ratio!r} is not valid: use a fraction of the base rate in [0, 1].")


def lr_factor(
    step: int, warmup_steps: int, total_steps: int, schedule: str = "constant", min_ratio: float = 0.0
) -> float:
    """The multiplier of the base rate at optimizer step ``step`` (0-based): (step + 1) / warmup during the
    warm-up, then 1 (constant), or a cosine / linear ramp from 1 at the warm-up's end to ``min_ratio`` at
    ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * shape


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, schedule: str, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    if schedule != "constant" and not (0 < total_steps < float("inf")):
        raise ValueError(
            f"module.lr_schedule={schedule} decays over the whole run, but its length is unknown "
            f"({total_steps} steps): set trainer.max_steps, or trainer.max_epochs with a sized data set."
        )
    total = int(total_steps) if schedule != "constant" else 0  # a constant rate needs no run length
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total, schedule, min_ratio)
    )
