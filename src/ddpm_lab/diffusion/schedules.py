"""Noise (beta) schedules: beta_t for t = 0..T-1, as float64 tensors of shape (T,).

The linear schedule is Ho et al. 2020 (section 4): beta from 1e-4 to 0.02 at T=1000, scaled by 1000/T so
that other T keep the same total noise. The cosine schedule is Nichol & Dhariwal 2021 (eq. 17), with s=0.008
and betas clipped at 0.999 so that the last step is not degenerate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..checks import is_int
from .choices import check_choice

MAX_BETA = 0.999


def _scaled_linear_endpoints(num_timesteps: int) -> tuple[float, float]:
    # Ho et al. tuned 1e-4..0.02 for T=1000; scaling keeps alpha-bar_T comparable for other T.
    # Short chains (T < 20) would push the end past 1, so both endpoints are capped at MAX_BETA.
    scale = 1000.0 / num_timesteps
    return min(scale * 1e-4, MAX_BETA), min(scale * 0.02, MAX_BETA)


def linear_beta_schedule(num_timesteps: int) -> torch.Tensor:
    """beta_t linear in t (Ho et al. 2020)."""
    start, end = _scaled_linear_endpoints(num_timesteps)
    return torch.linspace(start, end, num_timesteps, dtype=torch.float64)


def quadratic_beta_schedule(num_timesteps: int) -> torch.Tensor:
    """sqrt(beta_t) linear in t (the 'quad' schedule of the DDPM code base)."""
    start, end = _scaled_linear_endpoints(num_timesteps)
    return torch.linspace(start**0.5, end**0.5, num_timesteps, dtype=torch.float64) ** 2


def sigmoid_beta_schedule(num_timesteps: int) -> torch.Tensor:
    """beta_t follows a sigmoid ramp over [-6, 6] between the linear schedule's endpoints."""
    start, end = _scaled_linear_endpoints(num_timesteps)
    ramp = torch.sigmoid(torch.linspace(-6.0, 6.0, num_timesteps, dtype=torch.float64))
    return start + (end - start) * ramp


def tanh_beta_schedule(num_timesteps: int) -> torch.Tensor:
    """beta_t follows tanh(3 t / T) / tanh(3): rises fast, then saturates at the linear schedule's end.

    (A symmetric tanh ramp would be the sigmoid schedule again: (tanh(x) + 1) / 2 = sigmoid(2x).)
    """
    start, end = _scaled_linear_endpoints(num_timesteps)
    ramp = torch.tanh(torch.linspace(0.0, 3.0, num_timesteps, dtype=torch.float64)) / math.tanh(3.0)
    return start + (end - start) * ramp


def constant_beta_schedule(num_timesteps: int) -> torch.Tensor:
    """beta_t constant, chosen so that alpha-bar_T equals the linear schedule's alpha-bar_T."""
    linear_alpha_bar_end = torch.prod(1.0 - linear_beta_schedule(num_timesteps))
    beta = 1.0 - linear_alpha_bar_end ** (1.0 / num_timesteps)
    return torch.full((num_timesteps,), float(beta), dtype=torch.float64)


def betas_from_alpha_bar(alpha_bar: Callable[[float], float], num_timesteps: int) -> torch.Tensor:
    """Discretise a continuous alpha-bar(s), s in [0, 1], into betas: beta_t = 1 - abar(t+1/T)/abar(t/T)."""
    betas = [
        min(1.0 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), MAX_BETA)
        for i in range(num_timesteps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


def cosine_beta_schedule(num_timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. 17: alpha-bar(s) = cos^2(((s + offset) / (1 + offset)) * pi / 2)."""
    return betas_from_alpha_bar(lambda u: math.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2, num_timesteps)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Betas (T,) rescaled so that alpha-bar_T = 0 while alpha-bar_1 is kept (Lin et al. 2024, Algorithm 1):
    sqrt(abar) is shifted by its last value and scaled back to its first, so the model is trained at pure
    noise, where sampling starts. The last beta becomes 1; pair it with v (or x0) prediction."""
    root = torch.cumprod(1.0 - betas.to(torch.float64), dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alpha_bar = root**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas


BETA_SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {
    "linear": linear_beta_schedule,
    "cosine": cosine_beta_schedule,
    "sigmoid": sigmoid_beta_schedule,
    "quadratic": quadratic_beta_schedule,
    "tanh": tanh_beta_schedule,
    "constant": constant_beta_schedule,
}


def make_beta_schedule(name: str, num_timesteps: int) -> torch.Tensor:
    """Return the betas of the named schedule as a float64 tensor of shape (num_timesteps,)."""
    check_choice("schedule", name, sorted(BETA_SCHEDULES), what="beta schedule")
    if not is_int(num_timesteps) or num_timesteps < 2:
        # T = 1 leaves no reverse step but the decoder: a chain needs at least 2 steps.
        raise ValueError(
            f"num_timesteps={num_timesteps!r} is not valid: it must be an integer >= 2 (DDPM uses 1000; set "
            "diffusion.num_timesteps=1000)."
        )
    return BETA_SCHEDULES[name](num_timesteps).clamp(max=MAX_BETA)
