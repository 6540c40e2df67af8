"""A residual MLP denoiser for low-dimensional data (2-D toy sets), conditioned on the timestep."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import TimestepEmbedding


class _ResidualLayer(nn.Module):
    def __init__(self, hidden: int, temb_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.linear1 = nn.Linear(hidden, hidden)
        self.temb_proj = nn.Linear(temb_dim, hidden)
        self.linear2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        z = self.linear1(F.silu(self.norm(h))) + self.temb_proj(temb)
        return h + self.linear2(F.silu(z))


class MLPDenoiser(nn.Module):
    """forward(x (B, D), t (B,)) -> (B, D) or (B, 2D) with learned variance.

    Input projection, ``num_layers`` residual blocks of width ``hidden_dim`` each receiving the timestep
    embedding, and a linear output layer.
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        hidden_dim: int = 128,
        num_layers: int = 3,
        time_embed_dim: int = 64,
        learned_variance: bool = False,
    ) -> None:
        super().__init__()
        if len(sample_shape) != 1:
            raise ValueError(f"MLPDenoiser is for vector data (D,); got sample_shape={tuple(sample_shape)}.")
        dim = int(sample_shape[0])
        self.sample_shape = (dim,)
        self.in_channels = dim
        self.out_channels = dim * (2 if learned_variance else 1)
        self.time_embed = TimestepEmbedding(time_embed_dim, hidden_dim)
        self.input = nn.Linear(dim, hidden_dim)
        self.layers = nn.ModuleList(_ResidualLayer(hidden_dim, hidden_dim) for _ in range(num_layers))
        self.output = nn.Sequential(nn.LayerNorm(hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, self.out_channels))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = F.silu(self.time_embed(t))
        h = self.input(x)
        for layer in self.layers:
            h = layer(h, temb)
        return self.output(h)
