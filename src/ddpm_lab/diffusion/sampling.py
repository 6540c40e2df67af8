"""Sampling loops, driven by any ``model(x_t, t)``: ancestral DDPM (full or respaced), DDIM, and the few-step
solvers of ``solvers`` (Euler, Heun, Euler-ancestral, DPM-Solver++(2M), iPNDM), over any timestep spacing.

Randomness comes only from the ``generator`` passed in (no global RNG), so a seeded generator gives the same
samples on every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from . import parameterization as param
from .noise import Generators, generator_device, randn
from .respacing import SPACINGS
from .solvers import ANCESTRAL_ETA, ODE_SAMPLERS, solver_steps

if TYPE_CHECKING:
    from .gaussian_diffusion import GaussianDiffusion, Model

SAMPLERS = ("ddpm", "ddim", *ODE_SAMPLERS)
# Samplers whose eta means something: DDIM's sigma scale, and Euler-ancestral's share of fresh noise.
STOCHASTIC_ETA = ("ddim", "euler_ancestral")
# A sampler's eta where none is given: DDIM's 0 (deterministic, as Song et al. and diffusers' DDIMScheduler);
# Euler-ancestral's k-diffusion default (solvers.ANCESTRAL_ETA = 1; its eta=0 is plain deterministic Euler).
DEFAULT_ETA = {"ddim": 0.0, "euler_ancestral": ANCESTRAL_ETA}


def default_eta(sampler: str) -> float:
    return DEFAULT_ETA.get(sampler, 0.0)


def resolve_sampling(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Sampler settings: ``base`` (e.g. a run's ``sampling``) with the non-null ``overrides``. eta belongs to its
    sampler: when the overrides change the sampler without giving an eta, or no eta is set at all, it is the new
    sampler's default (``sampler=euler_ancestral`` over a DDIM run's eta=0 would otherwise be plain Euler)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    settings = {**base, **given}
    if "eta" not in given and (settings.get("eta") is None or settings.get("sampler") != base.get("sampler")):
        settings["eta"] = default_eta(settings["sampler"])
    return settings


@dataclass
class Trajectory:
    """States of one sampling run for pictures: ``states`` (K, B, ...) with ``noise_levels`` (K,) in the
    DDPM paper's 1-based notation (T = pure noise x_T, 0 = the final sample x_0), or, for a continuous-time
    objective, the value of its noise variable ``level_name`` (EDM's "sigma", flow matching's "t")."""

    noise_levels: list[int] | list[float]
    states: torch.Tensor
    level_name: str | None = None


def _resolve_device(model: Model, generator: Generators, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(model, torch.nn.Module):
        first = next(model.parameters(), None)
        if first is not None:
            return first.device
    return generator_device(generator, "cpu")


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
    eta: float | None = None,
    generator: Generators = None,
    clip_denoised: bool = False,
    progress: bool = False,
    return_trajectory: bool = False,
    device: torch.device | str | None = None,
    spacing: str = "uniform",
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Samples (B, ...) from x_T ~ N(0, I) over the ``steps`` timesteps ``spacing`` keeps (``steps=None``: all
    T): ``sampler`` "ddpm" (ancestral on the respaced chain), "ddim" (stochasticity ``eta``) or a solver of
    ``solvers`` (``eta`` scales euler_ancestral's fresh noise; None: ``DEFAULT_ETA``). A learned variance's
    half is used by ddpm only; the others use the mean part. ``clip_denoised`` clamps predicted x0 to [-1, 1]:
    only for data known to lie there (images). ``generator``: one for the batch, or one per example
    (``noise.per_sample_generators``)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}.")
    if spacing not in SPACINGS:
        raise ValueError(f"Unknown timestep spacing {spacing!r}; choose one of: {', '.join(SPACINGS)}.")
    eta = default_eta(sampler) if eta is None else eta
    if eta < 0:
        raise ValueError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}.")
    steps = diffusion.num_timesteps if steps is None else steps
    kept = diffusion.spaced_timesteps(steps, spacing)  # validates steps
    device = _resolve_device(model, generator, device)
    x = randn(tuple(shape), generator, device)
    batch = x.shape[0]
    if sampler in ODE_SAMPLERS:
        return _solve(
            diffusion, model, x, kept[::-1], sampler, eta, generator, clip_denoised, progress, return_trajectory
        )

    if sampler == "ddpm":
        chain = diffusion.respaced(steps, spacing)
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


def denoiser(diffusion: GaussianDiffusion, model: Model, timesteps: list[int], clip_denoised: bool = False):
    """``denoise(x_t, i)``: the network's x0 prediction (its mean part, any parameterisation) at
    ``timesteps[i]``, clamped to [-1, 1] with ``clip_denoised``: what every solver of ``solvers`` consumes."""
    step_tensors: dict[int, torch.Tensor] = {}

    def denoise(x_t: torch.Tensor, i: int) -> torch.Tensor:
        if i not in step_tensors:
            step_tensors[i] = torch.full((x_t.shape[0],), timesteps[i], dtype=torch.long, device=x_t.device)
        t = step_tensors[i]
        mean_part, _ = diffusion.split_output(model(x_t, diffusion.model_timesteps(t)), x_t)
        x0 = param.predicted_x0(diffusion.mean_type, x_t, mean_part, diffusion.coef("alphas_cumprod", t, x_t))
        return x0.clamp(-1.0, 1.0) if clip_denoised else x0

    return denoise


def _solve(
    diffusion: GaussianDiffusion,
    model: Model,
    x: torch.Tensor,
    timesteps: list[int],
    sampler: str,
    eta: float,
    generator: Generators,
    clip_denoised: bool,
    progress: bool,
    return_trajectory: bool,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """A solver of ``solvers`` over the descending ``timesteps`` of the full chain."""
    denoise = denoiser(diffusion, model, timesteps, clip_denoised)
    frames = _frames(len(timesteps))
    levels, states = [timesteps[0] + 1], [x.cpu()] if return_trajectory else []
    steps = solver_steps(sampler, denoise, x, diffusion.alphas_cumprod, timesteps, eta, generator)
    for position, x in enumerate(tqdm(steps, total=len(timesteps), desc=f"{sampler} sampling", disable=not progress)):
        if return_trajectory and position in frames:
            levels.append(timesteps[position + 1] + 1 if position + 1 < len(timesteps) else 0)
            states.append(x.cpu())
    if return_trajectory:
        return x, Trajectory(noise_levels=levels, states=torch.stack(states))
    return x
