"""Every feature metric of one sample set in one pass (FID, KID, IS, precision/recall, the FID's bootstrap
interval), and several sets' measurements (``num_evals`` sampling seeds) combined into one record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .fid import (
    GaussianStats,
    bootstrap_interval,
    fid_bootstrap_deviations,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)


@dataclass(frozen=True)
class MetricOptions:
    """Which metrics to compute besides FID. ``bootstrap``: replicates of the FID's bootstrap (0 = none)."""

    kid: bool = True
    kid_subset_size: int = 1000
    inception_score: bool = True
    precision_recall: bool = True
    bootstrap: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bootstrap != 0 and self.bootstrap < 10:
            raise ValueError(
                f"metrics.fid.bootstrap={self.bootstrap}: use 0 (no interval) or at least 10 replicates "
                "(100 or more for a stable 95% interval)."
            )
        if self.kid_subset_size < 2:
            raise ValueError(f"the KID subset size must be >= 2, got {self.kid_subset_size}.")

    def logged(self, num_evals: int = 1) -> tuple[str, ...]:
        """The names (without val/) a measurement of ``num_evals`` sample sets with these options logs."""
        return (
            "fid",
            *(("fid_min", "fid_std") if num_evals > 1 else ()),
            *(("fid_ci_low", "fid_ci_high") if self.bootstrap else ()),
            *(("kid_mean", "kid_std") if self.kid else ()),
            *(("is", "is_std") if self.inception_score else ()),
            *(("precision", "recall") if self.precision_recall else ()),
        )


def image_metrics(
    pool: torch.Tensor | np.ndarray,
    logits: torch.Tensor | np.ndarray | None,
    reference: GaussianStats,
    reference_features: np.ndarray | None,
    options: MetricOptions = MetricOptions(),
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The metrics of generated features ``pool`` (N, D) (and Inception ``logits`` (N, 1008)) against a
    reference: its statistics for FID, its kept feature subset for KID and precision/recall. The bootstrap
    deviations (computed on ``device``) come back as ``fid_deviations`` (an array) for ``combine_evaluations``."""
    out: dict[str, Any] = {"fid": frechet_distance(GaussianStats.from_features(pool), reference)}
    if options.bootstrap:
        out["fid_deviations"] = fid_bootstrap_deviations(
            pool, reference, options.bootstrap, seed=options.seed, device=device
        )
    if options.kid and reference_features is not None:
        out["kid_mean"], out["kid_std"], out["kid_subset_size"] = kernel_inception_distance(
            pool, reference_features, subset_size=options.kid_subset_size
        )
    if options.inception_score and logits is not None:
        out["is"], out["is_std"] = inception_score(logits)
    if options.precision_recall and reference_features is not None:
        out["precision"], out["recall"] = precision_recall(pool, reference_features)
    return out


def combine_evaluations(evaluations: Sequence[dict[str, Any]], confidence: float = 0.95) -> dict[str, Any]:
    """One record from measurements of independent sample sets: every metric's mean; for FID also the min
    and std (ddof 1) over sets where there are several, and the bootstrap interval of the mean (the replicate of a
    mean of independent sets is the mean of their replicates)."""
    if not evaluations:
        raise ValueError("combine_evaluations needs at least one evaluation.")
    fids = np.array([e["fid"] for e in evaluations])
    out: dict[str, Any] = {
        key: float(np.mean([e[key] for e in evaluations]))
        for key in evaluations[0]
        if key not in ("fid_deviations", "kid_subset_size")
    }
    if "kid_subset_size" in evaluations[0]:
        out["kid_subset_size"] = evaluations[0]["kid_subset_size"]
    if len(fids) > 1:
        out["fid_min"], out["fid_std"] = float(fids.min()), float(fids.std(ddof=1))
    if "fid_deviations" in evaluations[0]:
        deviations = np.mean([e["fid_deviations"] for e in evaluations], axis=0)
        out["fid_ci_low"], out["fid_ci_high"] = bootstrap_interval(out["fid"], deviations, confidence)
    return out
