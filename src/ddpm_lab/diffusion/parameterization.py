"""What the network predicts (the mean parameterisation) and conversions between the three choices.

With x_t = sqrt(abar) x0 + sqrt(1 - abar) eps (Ho et al. eq. 4):
  eps  -> x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)              (Ho et al. eq. 11 rearranged)
  v    =  sqrt(abar) eps - sqrt(1 - abar) x0                         (Salimans & Ho 2022, "v-prediction")
       -> x0 = sqrt(abar) x_t - sqrt(1 - abar) v
All functions take ``alpha_bar`` already broadcastable to x (e.g. shape (B, 1, 1, 1)).
"""

from __future__ import annotations

import torch

MEAN_TYPES = ("eps", "x0", "v")


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    return (x_t - (1.0 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    return (x_t - alpha_bar.sqrt() * x0) / (1.0 - alpha_bar).sqrt()


def v_from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    return alpha_bar.sqrt() * eps - (1.0 - alpha_bar).sqrt() * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    return alpha_bar.sqrt() * x_t - (1.0 - alpha_bar).sqrt() * v


def predicted_x0(mean_type: str, x_t: torch.Tensor, prediction: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0 implied by the network's prediction under ``mean_type``."""
    if mean_type == "eps":
        return x0_from_eps(x_t, prediction, alpha_bar)
    if mean_type == "x0":
        return prediction
    if mean_type == "v":
        return x0_from_v(x_t, prediction, alpha_bar)
    raise ValueError(f"Unknown mean_type {mean_type!r}; choose one of {', '.join(MEAN_TYPES)}.")


def training_target(mean_type: str, x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """What the network should output for a given (x0, noise) pair under ``mean_type``."""
    if mean_type == "eps":
        return noise
    if mean_type == "x0":
        return x0
    if mean_type == "v":
        return v_from_x0_eps(x0, noise, alpha_bar)
    raise ValueError(f"Unknown mean_type {mean_type!r}; choose one of {', '.join(MEAN_TYPES)}.")
