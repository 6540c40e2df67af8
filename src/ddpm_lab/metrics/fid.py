"""FID, KID, Inception Score and precision/recall from features, by torch-fidelity's own functions (so the
numbers are torch-fidelity's), plus what it lacks: a bootstrap interval for one FID.

FID (Heusel et al. 2017): ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64, the trace of the root
from the eigenvalues of S1 S2 (torch-fidelity's and TTUR's way).
KID (Binkowski et al. 2018): unbiased MMD^2, cubic polynomial kernel, averaged over random subsets.
IS (Salimans et al. 2016): exp E[KL(p(y|x) || p(y))] over splits.
Precision/recall (Kynkaanniemi et al. 2019): the share of generated samples inside the union of the real
samples' k-NN balls (k = 3), and of real samples inside the generated ones'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

BOOTSTRAP_METHOD = "bootstrap over the generated samples' features, percentile interval re-centred on the FID"
PRC_NEIGHBORHOOD = 3


@dataclass
class GaussianStats:
    """Mean (D,) and covariance (D, D) of features, float64, over ``count`` images."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    @classmethod
    def from_features(cls, features: torch.Tensor | np.ndarray) -> GaussianStats:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or len(f) < 2:
            raise ValueError(f"FID statistics need at least 2 feature vectors (N, D); got shape {f.shape}.")
        return cls(f.mean(axis=0), np.cov(f, rowvar=False), len(f))


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    stats = [{"mu": s.mean, "sigma": s.cov} for s in (a, b)]
    return float(fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID])


def kernel_inception_distance(
    a: torch.Tensor | np.ndarray,
    b: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 2020,
) -> tuple[float, float, int]:
    """(mean, std, subset size used) of KID over ``subsets`` random subsets. The subset size is capped at the
    smaller set's size (recorded with the value) instead of failing on small evaluations."""
    x, y = (torch.as_tensor(np.asarray(f, dtype=np.float64)) for f in (a, b))
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError("KID needs at least 2 images on each side.")
    out = kid_features_to_metric(x, y, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD]), size


def inception_score(logits: torch.Tensor | np.ndarray, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """(mean, std) of the Inception Score over ``splits`` shuffled splits of the logits (N, 1008)."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    out = isc_features_to_metric(z, splits=max(1, min(splits, len(z))), shuffle=True, rng_seed=seed)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])


def precision_recall(
    generated: torch.Tensor | np.ndarray, real: torch.Tensor | np.ndarray, neighborhood: int = PRC_NEIGHBORHOOD
) -> tuple[float, float]:
    """(precision, recall) of generated against real features, float32 distances as torch-fidelity computes
    them; memory-saving (blockwise) when the full distance matrices would be large."""
    g, r = (torch.as_tensor(np.asarray(f, dtype=np.float32)) for f in (generated, real))
    if min(len(g), len(r)) <= neighborhood:
        raise ValueError(f"precision/recall with k={neighborhood} needs more than {neighborhood} images per side.")
    large = max(len(g), len(r)) ** 2 > 10_000**2
    out = prc_features_to_metric(
        g, r, prc_neighborhood=neighborhood, prc_batch_size=10_000, save_cpu_ram=large, verbose=False
    )
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


def resampled_fid(
    features: torch.Tensor, indices: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, mapped: torch.Tensor | None
) -> float:
    """FID of ``features[indices]`` (n, D) against a reference ``mean``/``cov`` by one symmetric eigenvalue
    problem: tr (S S_r)^(1/2) is the nuclear norm of Xc S_r^(1/2) / sqrt(n - 1), read from the smaller of its
    Gram matrices: n x n as Xc S_r Xc^T (no root of S_r needed), or D x D from ``mapped`` = features S_r^(1/2)."""
    sample = features[indices]
    n, sample_mean = len(sample), sample.mean(dim=0)
    centred = sample - sample_mean
    if mapped is None:
        gram = centred @ cov @ centred.T
    else:
        rooted = mapped[indices] - mapped[indices].mean(dim=0)
        gram = rooted.T @ rooted
    trace_sqrt = torch.linalg.eigvalsh(gram / (n - 1)).clamp(min=0).sqrt().sum()
    diff = sample_mean - mean
    return float(diff @ diff + (centred**2).sum() / (n - 1) + torch.trace(cov) - 2 * trace_sqrt)


def fid_bootstrap_deviations(
    features: torch.Tensor | np.ndarray,
    reference: GaussianStats,
    replicates: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """FID of ``replicates`` resamplings (with replacement) of the generated features, less their mean:
    (replicates,), float64 on ``device`` (a GPU makes 10k x 2048 replicates cheap). Their spread is the FID's
    sampling noise at this sample count, from the samples at hand."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float64), device=device)
    mean, cov = (torch.as_tensor(a, dtype=torch.float64, device=device) for a in (reference.mean, reference.cov))
    n, d = x.shape
    mapped = None
    if n > d:  # the D x D Gram is the smaller one: map the features through S_r^(1/2) once
        w, v = torch.linalg.eigh(cov)
        mapped = x @ ((v * w.clamp(min=0).sqrt()) @ v.T)
    generator = torch.Generator().manual_seed(seed)
    draws = [torch.randint(0, n, (n,), generator=generator).to(device) for _ in range(replicates)]
    values = np.array([resampled_fid(x, draw, mean, cov, mapped) for draw in draws])
    return values - values.mean()


def bootstrap_interval(fid: float, deviations: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """``fid`` plus the (1 - confidence)/2 and (1 + confidence)/2 quantiles of the bootstrap deviations.
    Re-centred, not the raw percentiles: resampling with replacement repeats samples, which biases every
    replicate's FID upward; the interval keeps the spread and drops that bias. A Frechet distance is >= 0, so
    the lower end is cut at 0 (a re-centred bound below 0 comes from very few samples)."""
    low, high = np.quantile(deviations, [(1 - confidence) / 2, (1 + confidence) / 2])
    return max(0.0, fid + float(low)), fid + float(high)
