"""Sampling loops: ancestral DDPM (full or respaced) and DDIM, driven by any ``model(x_t, t)``.

Randomness comes only from the ``generator`` passed in (no global RNG), so a seeded generator gives the same
samples on every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from .respacing import space_timesteps

if TYPE_CHECKING:
    from .gaussian_diffusion import GaussianDiffusion, Model


@dataclass
class Trajectory:
    """States of one sampling run for pictures: ``states`` (K, B, ...) with ``noise_levels`` (K,) in the
    DDPM paper's 1-based notation (T = pure noise x_T, 0 = the final sample x_0)."""

    noise_levels: list[int]
    states: torch.Tensor


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn from ``generator`` (on its own device) and moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def _resolve_device(model: Model, generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(model, torch.nn.Module):
        first = next(model.parameters(), None)
        if first is not None:
            return first.device
    return generator.device if generator is not None else torch.device("cpu")


def _frames(num_steps: int, num_frames: int = 10) -> set[int]:
    """Loop positions after which a trajectory frame is kept (always the last)."""
    return {round(i * (num_steps - 1) / max(num_frames - 1, 1)) for i in range(num_frames)} | {num_steps - 1}


@torch.no_grad()
def sample_loop(
    diffusion: GaussianDiffusion,
    model: Model,
    shape: tuple[int, ...],
    sampler: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
    progress: bool = False,
    return_trajectory: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Samples (B, ...) from x_T ~ N(0, I): ``sampler`` "ddpm" (ancestral, IDDPM-respaced to ``steps``) or
    "ddim" (the ``steps``-long DDIM subsequence, stochasticity ``eta``); ``steps=None`` uses all T steps.
    ``clip_denoised`` clamps predicted x0 to [-1, 1]: only for data known to lie there (images)."""
    from .gaussian_diffusion import SAMPLERS

    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}.")
    if eta < 0:
        raise ValueError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}.")
    steps = diffusion.num_timesteps if steps is None else steps
    kept = space_timesteps(diffusion.num_timesteps, steps)  # validates steps
    device = _resolve_device(model, generator, device)
    x = randn(tuple(shape), generator, device)
    batch = x.shape[0]

    if sampler == "ddpm":
        chain = diffusion.respaced(steps)
        schedule = [(i, None) for i in reversed(range(chain.num_timesteps))]
    else:
        chain = diffusion
        descending = kept[::-1]
        schedule = list(zip(descending, [*descending[1:], -1], strict=True))

    frames = _frames(len(schedule))
    levels = [int(chain.timestep_map[schedule[0][0]]) + 1]
    states = [x.cpu()] if return_trajectory else []
    for position, (step, step_prev) in enumerate(tqdm(schedule, desc=f"{sampler} sampling", disable=not progress)):
        t = torch.full((batch,), step, dtype=torch.long, device=device)
        output = model(x, chain.model_timesteps(t))
        if sampler == "ddpm":
            x = chain.p_sample(output, x, t, noise=randn(x.shape, generator, device), clip_denoised=clip_denoised)
            level = int(chain.timestep_map[step - 1]) + 1 if step > 0 else 0
        else:
            noise = randn(x.shape, generator, device) if eta > 0 else None
            x = chain.ddim_step(output, x, t, step_prev, eta=eta, noise=noise, clip_denoised=clip_denoised)
            level = step_prev + 1
        if return_trajectory and position in frames:
            levels.append(level)
            states.append(x.cpu())
    if return_trajectory:
        return x, Trajectory(noise_levels=levels, states=torch.stack(states))
    return x
