"""FID, KID and Inception Score from Inception features (float64 throughout).

FID (Heusel et al. 2017): ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the trace of the matrix square
root computed from the eigenvalues of S1 S2 (as the TTUR reference code and torch-fidelity do).
KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets.
IS (Salimans et al. 2016): exp E[KL(p(y|x) || p(y))] over splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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
    diff = a.mean - b.mean
    eigenvalues = np.linalg.eigvals(a.cov @ b.cov).astype(np.complex128)
    trace_sqrt = np.sqrt(eigenvalues).real.sum()
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2.0 * trace_sqrt)


def _poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3 for equal-size subsets."""
    d, m = x.shape[1], len(x)
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    off_diagonal = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(off_diagonal - 2.0 * kxy.sum() / (m * m))


def kernel_inception_distance(
    a: torch.Tensor | np.ndarray,
    b: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 2020,
) -> tuple[float, float, int]:
    """(mean, std, subset size used) of KID over ``subsets`` random subsets. The subset size is capped at the
    smaller set's size (recorded with the value) instead of failing on small evaluations."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError("KID needs at least 2 images on each side.")
    rng = np.random.RandomState(seed)
    values = [
        _poly_mmd2(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values)), size


def inception_score(logits: torch.Tensor | np.ndarray, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """(mean, std) of exp(E_x KL(p(y|x) || p(y))) over ``splits`` shuffled splits of the logits (N, 1008)."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    z = z[np.random.RandomState(seed).permutation(len(z))]
    splits = max(1, min(splits, len(z)))
    log_p = z.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        chunk = log_p[i * len(z) // splits : (i + 1) * len(z) // splits]
        log_marginal = chunk.exp().mean(dim=0).log()
        scores.append(float((chunk.exp() * (chunk - log_marginal)).sum(dim=1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


def image_metrics(
    pool: torch.Tensor,
    logits: torch.Tensor,
    reference: GaussianStats,
    reference_features: np.ndarray | None,
    kid: bool = True,
    inception: bool = True,
) -> dict[str, float]:
    """FID (+ KID against ``reference_features``, + IS) of generated features against a reference."""
    out = {"fid": frechet_distance(GaussianStats.from_features(pool), reference)}
    if kid and reference_features is not None:
        out["kid_mean"], out["kid_std"], out["kid_subset_size"] = kernel_inception_distance(pool, reference_features)
    if inception:
        out["is"], out["is_std"] = inception_score(logits)
    return out
