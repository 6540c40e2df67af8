"""Timestep respacing (Nichol & Dhariwal 2021, section 4): run a T-step model on a k-step subsequence.

Keeping timesteps S = {s_0 < ... < s_{k-1}} of a chain with cumulative products alpha-bar defines a new chain
with the same marginals q(x_{s_i} | x_0): beta'_i = 1 - abar_{s_i} / abar_{s_{i-1}} (abar_{s_{-1}} = 1).

Which k timesteps to keep is the *spacing*; every spacing here keeps k distinct integers in [0, T-1] and ends at
T-1, so sampling starts where x_T ~ N(0, I) matches the forward process (Lin et al. 2024: the 'leading'
stride T//k starts too early):
  uniform    evenly spaced, keeping 0 and T-1 (diffusers' "linspace"; IDDPM's respacing)
  trailing   round(T - i T/k) - 1 for i = 0..k-1 (diffusers' "trailing", Lin et al. 2024 table 2)
  quadratic  denser near t = 0, t_i = (T-1) (i/(k-1))^2 (the density of DDIM's CIFAR-10 schedule)
  karras     the timesteps nearest (in log sigma) to Karras et al. 2022's rho = 7 ramp between sigma_min and
             sigma_max, sigma_t = sqrt((1 - abar_t) / abar_t) (eq. 5)
"""

from __future__ import annotations

import torch

from ..checks import is_int

SPACINGS = ("uniform", "trailing", "quadratic", "karras")
KARRAS_RHO = 7.0
# alpha-bar floor where sigma would be infinite (a zero-terminal-SNR schedule): diffusers' value, 2^-24.
MIN_ALPHA_BAR = 2.0**-24


def _check_steps(num_timesteps: int, steps: int) -> None:
    if not is_int(steps) or not 1 <= steps <= num_timesteps:
        raise ValueError(
            f"Cannot respace a {num_timesteps}-step chain to {steps!r} steps: steps must be an integer in "
            f"[1, {num_timesteps}] (or None for all steps)."
        )


def _strictly_increasing(timesteps: list[int], num_timesteps: int) -> list[int]:
    """Push rounded timesteps apart (up from the bottom, then down from T-1) so all k are distinct."""
    out = sorted(timesteps)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + 1)
    out[-1] = num_timesteps - 1  # every spacing starts sampling at T-1
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], out[i + 1] - 1)
    return out


def sigmas_from_alpha_bar(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """VE noise levels sigma_t = sqrt((1 - abar_t) / abar_t) (float64, finite: abar floored at 2^-24)."""
    alpha_bar = alphas_cumprod.to(torch.float64).clamp(min=MIN_ALPHA_BAR)
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def space_timesteps(
    num_timesteps: int, steps: int, spacing: str = "uniform", alphas_cumprod: torch.Tensor | None = None
) -> list[int]:
    """``steps`` distinct timesteps (ascending) of 0..num_timesteps-1 under ``spacing``, always ending at T-1.

    ``alphas_cumprod`` (T,) is needed by "karras" (it spaces noise levels, not indices).
    """
    if spacing not in SPACINGS:
        raise ValueError(f"Unknown timestep spacing {spacing!r}; choose one of: {', '.join(SPACINGS)}.")
    _check_steps(num_timesteps, steps)
    if steps == 1:
        return [num_timesteps - 1]
    if spacing == "uniform":
        # Rounding a spacing of at least 1 keeps the timesteps distinct.
        return torch.linspace(0, num_timesteps - 1, steps, dtype=torch.float64).round().long().tolist()
    if spacing == "trailing":
        stride = num_timesteps / steps
        return sorted(round(num_timesteps - i * stride) - 1 for i in range(steps))
    if spacing == "quadratic":
        ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64) ** 2
        return _strictly_increasing((ramp * (num_timesteps - 1)).round().long().tolist(), num_timesteps)
    if alphas_cumprod is None or alphas_cumprod.numel() != num_timesteps:
        raise ValueError("spacing='karras' needs the chain's alphas_cumprod (T,) to place its noise levels.")
    log_sigmas = sigmas_from_alpha_bar(alphas_cumprod).log()
    inv_min, inv_max = (log_sigmas[[0, -1]] / KARRAS_RHO).exp().tolist()
    ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    targets = (inv_max + ramp * (inv_min - inv_max)) ** KARRAS_RHO  # sigma_max -> sigma_min
    nearest = (log_sigmas[None, :] - targets.log()[:, None]).abs().argmin(dim=1)
    return _strictly_increasing(nearest.tolist(), num_timesteps)


def respaced_betas(alphas_cumprod: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """Betas (float64, shape (len(kept),)) of the chain that visits only the ``kept`` timesteps."""
    kept_alpha_bar = alphas_cumprod[torch.as_tensor(kept)]
    previous = torch.cat([torch.ones(1, dtype=kept_alpha_bar.dtype), kept_alpha_bar[:-1]])
    return 1.0 - kept_alpha_bar / previous
