"""Closed-form KL divergences and the discretised Gaussian decoder (Ho et al. section 3.3).

All results are in nats unless a name says bits; ``mean_flat`` averages over every non-batch dimension so
that a per-example value in bits/dim is ``mean_flat(kl) / log(2)``.
"""

from __future__ import annotations

import math

import torch


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all dimensions but the first: (B, ...) -> (B,)."""
    return x.mean(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, num_bins: int = 256
) -> torch.Tensor:
    """Elementwise log-probability of 8-bit data x in [-1, 1] under a Gaussian discretised into bins.

    Bin i covers [x_i - w/2, x_i + w/2] with w = 2/(num_bins - 1); the first and last bins extend to -inf and
    +inf so the probabilities of the num_bins values sum to one (Ho et al. eq. 13).
    """
    half_width = 1.0 / (num_bins - 1)
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + half_width) * inv_std
    lower = (x - mean - half_width) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_survival_lower = torch.special.log_ndtr(-lower)
    # Phi(u) - Phi(l), evaluated in whichever tail keeps precision: as Phi(u) (1 - Phi(l)/Phi(u)) left of the
    # mean and as S(l) (1 - S(u)/S(l)) right of it, where S(z) = Phi(-z).
    # The clamp only guards log(0) in the branch torch.where discards, whose inf would turn gradients to NaN.
    left_gap = -torch.expm1(torch.special.log_ndtr(lower) - log_cdf_upper)
    right_gap = -torch.expm1(torch.special.log_ndtr(-upper) - log_survival_lower)
    left = log_cdf_upper + torch.log(left_gap.clamp(min=1e-300))
    right = log_survival_lower + torch.log(right_gap.clamp(min=1e-300))
    log_mid = torch.where(upper + lower < 0, left, right)
    edge = 1.0 - half_width
    return torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_survival_lower, log_mid))


def gaussian_prior_kl_bits(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """Per-example KL(q(x_T | x0) || N(0, I)) in bits/dim."""
    zeros = torch.zeros_like(mean)
    return mean_flat(normal_kl(mean, log_variance, zeros, zeros)) / math.log(2.0)
