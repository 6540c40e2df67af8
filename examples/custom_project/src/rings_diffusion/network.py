"""Our own denoiser: an MLP with Fourier features of the timestep, written to ddpm-lab's network contract
(README, "Your own project"): built with ``sample_shape`` and ``learned_variance``, called as ``net(x_t, t)``."""

from __future__ import annotations

import math

import torch
from torch import nn


class RingDenoiser(nn.Module):
    """forward(x_t (B, D), t (B,) long) -> (B, D), or (B, 2 D) when the variance is learned."""

    def __init__(
        self,
        sample_shape: list[int],
        learned_variance: bool,
        width: int = 128,
        depth: int = 3,
        num_frequencies: int = 16,
    ) -> None:
        super().__init__()
        (dim,) = sample_shape  # point data only
        # Timesteps in [0, 1000) as sin/cos at geometrically spaced frequencies.
        self.register_buffer("frequencies", torch.exp(torch.linspace(0.0, math.log(1000.0), num_frequencies)) / 1000.0)
        layers: list[nn.Module] = [nn.Linear(dim + 2 * num_frequencies, width), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.SiLU()]
        layers.append(nn.Linear(width, dim * (2 if learned_variance else 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angles = t.to(x.dtype)[:, None] * self.frequencies[None, :].to(x.dtype)
        return self.net(torch.cat([x, angles.sin(), angles.cos()], dim=1))
