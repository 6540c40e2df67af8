"""Every metric ddpm-lab logs, with the properties its readers need, defined once: which way is better (the
run record's ``best``, the leaderboard's order, Optuna's direction), whether it is a sample-quality number
measured under a sampling protocol (the leaderboard never ranks two protocols together), and whether the
leaderboard shows it as a column by default.

Pure Python (no torch, no Lightning): the offline leaderboard reads it. A metric that is not here (a user's
own) gets no ``best`` and must be ranked with an explicit ``--ascending``/``--descending``; a project can add
its own with ``register``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["lower", "higher"] | None


@dataclass(frozen=True)
class Metric:
    """``name`` as logged; ``direction`` "lower" or "higher" is better, None where neither is (a spread, an
    interval bound, a learning rate, a counter): such a metric has no best and cannot be ranked."""

    name: str
    direction: Direction
    description: str
    sample_quality: bool = False  # measured on generated samples under the FID protocol (fid_protocol)
    shown: bool = False  # a leaderboard column by default


def _sample_quality(name: str, direction: Direction, description: str, shown: bool = False) -> Metric:
    return Metric(name, direction, description, sample_quality=True, shown=shown)


# The loss terms of diffusion.losses.training_losses, logged as train/<term> and val/<term>.
LOSS_TERMS = ("loss", "mse", "l1", "vlb")

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        _sample_quality("val/fid", "lower", "Frechet Inception distance (mean over num_evals sets)", shown=True),
        _sample_quality("val/fd_dinov2", "lower", "Frechet distance in DINOv2 features", shown=True),
        _sample_quality("val/kid_mean", "lower", "kernel Inception distance", shown=True),
        _sample_quality("val/is", "higher", "Inception score", shown=True),
        _sample_quality("val/precision", "higher", "share of samples on the data manifold (k=3)", shown=True),
        _sample_quality("val/recall", "higher", "share of the data manifold the samples cover (k=3)", shown=True),
        _sample_quality("val/fid_min", "lower", "the lowest FID of the num_evals sample sets"),
        _sample_quality("val/fid_std", None, "std of FID over the num_evals sample sets"),
        _sample_quality("val/fid_ci_low", None, "lower end of the FID's bootstrap 95% interval"),
        _sample_quality("val/fid_ci_high", None, "upper end of the FID's bootstrap 95% interval"),
        _sample_quality("val/kid_std", None, "std of KID over its subsets"),
        _sample_quality("val/is_std", None, "std of IS over its splits"),
        Metric("val/nll_bpd", "lower", "variational bound on the NLL, bits/dim", shown=True),
        Metric("val/ode_nll_bpd", "lower", "probability-flow ODE NLL of dequantised data, bits/dim", shown=True),
        Metric("val/sample_distance", "lower", "MMD between samples and data (2-D), clipped at 0", shown=True),
        Metric("val/sample_mmd2", "lower", "unbiased MMD^2 between samples and data (2-D), signed", shown=True),
        Metric("val/sample_distance_gaussian", None, "MMD between N(0, I) and the data: the untrained yardstick"),
        *(Metric(f"val/{t}", "lower", f"validation loss term {t}", shown=t == "loss") for t in LOSS_TERMS),
        *(Metric(f"train/{t}", "lower", f"training loss term {t}") for t in LOSS_TERMS),
        Metric("train/nonfinite_skipped", None, "steps skipped for a non-finite loss (nan_policy=skip)"),
        Metric("epoch", None, "training epoch"),
    )
}


def register(metric: Metric) -> None:
    """Add a project's own metric (or replace one), so that records, leaderboards and sweeps know its direction."""
    METRICS[metric.name] = metric


def metric(name: str) -> Metric | None:
    """The registered metric ``name``; learning rates (``lr-<Optimizer>``, from LearningRateMonitor) have no
    direction; anything else unknown is None."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith("lr-"):
        return Metric(name, None, "learning rate")
    return None


def direction(name: str) -> Direction:
    found = metric(name)
    return found.direction if found else None


def is_better(name: str, value: float, than: float) -> bool:
    """Whether ``value`` beats ``than`` for metric ``name`` (which must have a direction)."""
    return value < than if direction(name) == "lower" else value > than


def require_direction(name: str) -> Literal["lower", "higher"]:
    """The direction of ``name``, or a ValueError saying that it has none and how to give one."""
    found = metric(name)
    if found is None or found.direction is None:
        why = "is not a metric ddpm-lab knows" if found is None else "has no better end (a spread, bound or setting)"
        raise ValueError(
            f"{name} {why}, so which end is best is not known: rank a metric with a direction "
            f"({', '.join(m for m in METRICS if METRICS[m].shown)}), pass --ascending or --descending, or "
            "register your metric with ddpm_lab.metric_registry.register."
        )
    return found.direction


def optuna_direction(name: str) -> str:
    """Optuna's study direction for objective ``name``: minimize or maximize."""
    return "minimize" if require_direction(name) == "lower" else "maximize"


def sample_quality_metrics() -> tuple[str, ...]:
    return tuple(name for name, m in METRICS.items() if m.sample_quality)


def shown_metrics() -> tuple[str, ...]:
    return tuple(name for name, m in METRICS.items() if m.shown)
