"""Timestep respacing (Nichol & Dhariwal 2021, section 4): run a T-step model on a k-step subsequence.

Keeping timesteps S = {s_0 < ... < s_{k-1}} of a chain with cumulative products alpha-bar defines a new chain
with the same marginals q(x_{s_i} | x_0): beta'_i = 1 - abar_{s_i} / abar_{s_{i-1}} (abar_{s_{-1}} = 1).
"""

from __future__ import annotations

import torch


def space_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps of 0..num_timesteps-1, always keeping 0 and T-1.

    Keeping the last step T-1 means sampling starts where alpha-bar is smallest, so x_T ~ N(0, I) matches
    the forward process (the 'trailing' spacing; the 'leading' stride T//k starts too early, cf. Lin et al.
    2024). Rounding a spacing of at least 1 keeps the timesteps distinct.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ValueError(
            f"Cannot respace a {num_timesteps}-step chain to {steps!r} steps: steps must be an integer in "
            f"[1, {num_timesteps}] (or None for all steps)."
        )
    if steps == 1:
        return [num_timesteps - 1]
    grid = torch.linspace(0, num_timesteps - 1, steps, dtype=torch.float64).round().long()
    return grid.tolist()


def respaced_betas(alphas_cumprod: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """Betas (float64, shape (len(kept),)) of the chain that visits only the ``kept`` timesteps."""
    kept_alpha_bar = alphas_cumprod[torch.as_tensor(kept)]
    previous = torch.cat([torch.ones(1, dtype=kept_alpha_bar.dtype), kept_alpha_bar[:-1]])
    return 1.0 - kept_alpha_bar / previous
