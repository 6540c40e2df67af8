"""Our own denoiser, written to ddpm-lab's network contract (README, "Your own project"): built with
``sample_shape`` and ``learned_variance``, called as ``net(x_t, t)``. A residual MLP whose layers are modulated
(FiLM: scale and shift) by an embedding of the timestep; ddpm-lab's sinusoidal embedding is reused."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddpm_lab.models.embeddings import sinusoidal_embedding


class RingDenoiser(nn.Module):
    """forward(x_t (B, D), t (B,) long) -> (B, D), or (B, 2 D) when the variance is learned."""

    def __init__(
        self, sample_shape: list[int], learned_variance: bool, width: int = 128, depth: int = 3, time_dim: int = 64
    ) -> None:
        super().__init__()
        (dim,) = sample_shape  # point data only
        self.time_dim = time_dim
        self.time = nn.Sequential(nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, 2 * width * depth))
        self.input = nn.Linear(dim, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.norms = nn.ModuleList(nn.LayerNorm(width, elementwise_affine=False) for _ in range(depth))
        self.output = nn.Linear(width, dim * (2 if learned_variance else 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        film = self.time(sinusoidal_embedding(t, self.time_dim)).chunk(2 * len(self.layers), dim=1)
        h = self.input(x)
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
            scale, shift = film[2 * i], film[2 * i + 1]
            h = h + layer(F.silu(norm(h) * (1 + scale) + shift))
        return self.output(F.silu(h))
