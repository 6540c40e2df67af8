"""Gaussian noise drawn from an explicit ``torch.Generator`` (no global RNG): the one helper every sampler uses."""

from __future__ import annotations

import torch


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise (shape) drawn from ``generator`` (on its own device) and moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)
