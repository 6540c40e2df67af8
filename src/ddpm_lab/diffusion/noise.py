"""Gaussian noise drawn from explicit ``torch.Generator``s (no global RNG): the one helper every sampler uses.

``Generators`` is one generator for the whole batch, or one per example (row): with one per example, example i's
noise depends on its own generator only, so a sample set is the same whatever the batch size or the number of
ranks that share it (EDM2's per-image seeds). ``per_sample_generators`` seeds them from (base seed, index).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


def generator_device(generator: Generators, default: torch.device | str) -> torch.device:
    """Where ``generator`` draws (the first one's device for a list; ``default`` without one)."""
    if generator is None:
        return torch.device(default)
    first = generator if isinstance(generator, torch.Generator) else generator[0]
    return first.device


def randn(shape: tuple[int, ...], generator: Generators, device: torch.device) -> torch.Tensor:
    """Standard normal noise (shape) drawn from ``generator`` (on its own device) and moved to ``device``; with
    one generator per example, row i of the batch (shape[0] rows) comes from generator i."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=generator_device(generator, device)).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} per-example generators for a batch of {shape[0]}: give one per example.")
    rows = [torch.randn(shape[1:], generator=g, device=g.device) for g in generator]
    return torch.stack(rows).to(device)


def sample_seed(base_seed: int, index: int) -> int:
    """The seed of example ``index`` of the sample set of ``base_seed``: a 63-bit hash of the pair (numpy's
    SeedSequence), so neighbouring bases and indices give unrelated streams."""
    return int(
        np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, int(index)])
        .generate_state(2, np.uint32)
        .view(np.uint64)[0]
        >> 1
    )


def per_sample_generators(base_seed: int, indices: Sequence[int], device: torch.device | str) -> list[torch.Generator]:
    """One generator per example index, seeded by (base_seed, index), on ``device``."""
    return [torch.Generator(device=device).manual_seed(sample_seed(base_seed, i)) for i in indices]
