"""What the continuous-time objectives (``edm``, ``flow_matching``) share: the time-quantile draw, the
Gaussian quantile function, the per-step loop with progress and trajectory frames, and the NFE count.

Training times arrive as quantiles u (B,) in [0, 1) of the objective's own time distribution (EDM's
log-normal sigma, flow matching's uniform or logit-normal t), drawn by ``ContinuousTimeSampler``: the process
maps u through its inverse CDF, so the distribution is defined once, in the process, and validation can pin u
per item the way it pins the DDPM timestep.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from .noise import Generators, generator_device, randn
from .ode_likelihood import dequantized_bits_per_dim, ode_log_likelihood
from .sampling import Trajectory, _frames

# u is kept inside [2^-24, 1 - 2^-24] so that the normal quantile is finite (|z| < 5.3).
QUANTILE_FLOOR = 2.0**-24


def normal_quantile(u: torch.Tensor) -> torch.Tensor:
    """Phi^-1(u) of the standard normal, elementwise (u clamped into [2^-24, 1 - 2^-24])."""
    u = u.clamp(QUANTILE_FLOOR, 1.0 - QUANTILE_FLOOR)
    return math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)


class ContinuousTimeSampler:
    """Draws training-time quantiles u ~ U[0, 1) (B,) float64 with unit weights: the ``uniform`` timestep
    sampler of a continuous-time objective (IDDPM's loss-aware sampler needs a discrete chain)."""

    adaptive = False

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        draw = generator.device if generator is not None else torch.device(device)
        u = torch.rand(batch_size, dtype=torch.float64, device=draw, generator=generator)
        return u.to(device), torch.ones(batch_size, device=device)

    def validation_time(self, generator: torch.Generator) -> torch.Tensor:
        """One fixed quantile (1,) drawn from an item's own generator (validation losses are comparable)."""
        return torch.rand(1, dtype=torch.float64, generator=generator)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Nothing to learn."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def make_continuous_time_sampler(name: str) -> ContinuousTimeSampler:
    if name != "uniform":
        raise ValueError(
            f"timestep_sampler={name!r} needs the discrete DDPM chain (its importance weights are over T "
            "timesteps); a continuous-time objective draws its times from its own distribution: use uniform."
        )
    return ContinuousTimeSampler()


def per_example(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor shaped (B, 1, ...) to broadcast with ``like``, in ``like``'s dtype."""
    return value.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def initial_noise(
    shape: tuple[int, ...], generator: Generators, device: torch.device | str | None, model
) -> torch.Tensor:
    """N(0, I) of ``shape`` from ``generator`` on the model's device (``device`` wins when given)."""
    if device is None:
        first = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
        device = first.device if first is not None else generator_device(generator, "cpu")
    return randn(tuple(shape), generator, torch.device(device))


def run_steps(
    steps: Iterator[torch.Tensor],
    start: torch.Tensor,
    levels: list[float],
    level_name: str,
    desc: str,
    progress: bool,
    return_trajectory: bool,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Drain a solver's per-step states (one per entry of ``levels`` after the first) with a progress bar,
    keeping about ten frames for a trajectory picture. ``levels``: the noise level of each state, start first
    (EDM's sigma, flow matching's t: ``level_name``), for the picture's labels."""
    x, kept, states = start, [levels[0]], [start.cpu()] if return_trajectory else []
    frames = _frames(len(levels) - 1)
    for position, x in enumerate(tqdm(steps, total=len(levels) - 1, desc=desc, disable=not progress)):
        if return_trajectory and position in frames:
            kept.append(levels[position + 1])
            states.append(x.cpu())
    if return_trajectory:
        return x, Trajectory(noise_levels=kept, states=torch.stack(states), level_name=level_name)
    return x


def check_steps(steps: int | None, objective: str) -> int:
    if steps is None:
        raise ValueError(
            f"objective {objective} is continuous in time: it has no 'all T steps'; give sampling.steps "
            "(e.g. 18 for EDM's Heun, 35 NFE)."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
    return steps


Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


class ContinuousProcess:
    """What EDM and flow matching offer alike to the LightningModule and the CLIs: a network shaped like the
    data (no variance half), the continuous time draw, and the likelihood of their probability-flow ODE. A
    subclass sets ``objective``, ``samplers``, ``network_output`` (what the network predicts, for messages) and
    implements ``probability_flow``, ``model_evaluations``, ``training_losses`` and ``sample``."""

    objective: str
    network_output: str
    num_timesteps = None  # continuous in time: no "all T steps"
    learned_variance = False
    loss_type = "mse"  # the loss terms it returns: "loss" and "mse"
    nll_metric = "val/ode_nll_bpd"  # the ODE likelihood, never mixed with DDPM's bound

    def model_output_channels(self, data_channels: int) -> int:
        return data_channels

    def check_model_channels(self, model_out_channels: int, data_channels: int) -> None:
        if model_out_channels != data_channels:
            raise ValueError(
                f"objective {self.objective} needs a network with {data_channels} output channels "
                f"({self.network_output}), but it outputs {model_out_channels}. Build it with learned_variance=False."
            )

    def make_timestep_sampler(self, name: str) -> ContinuousTimeSampler:
        return make_continuous_time_sampler(name)

    def probability_flow(self, model, steps: int) -> tuple[Callable, list[float], float]:
        """(velocity(x, tau), grid from the data end to the noise end, prior std) of the ODE, ``steps`` steps."""
        raise NotImplementedError

    def log_likelihood(self, model, x: torch.Tensor, steps: int = 64, **options: Any) -> torch.Tensor:
        """log p(x) in nats (B,) of continuous data x (B, ...) under the ODE model (``ode_log_likelihood``'s
        options: divergence "exact" (default; 2-D data) or "hutchinson", generator, progress)."""
        velocity, grid, prior_std = self.probability_flow(model, steps)
        return ode_log_likelihood(velocity, x, grid, prior_std=prior_std, **options)

    def nll_bits_per_dim(self, model, x0: torch.Tensor, steps: int = 64, **options: Any) -> torch.Tensor:
        """Per-example bits/dim (B,) of dequantised 8-bit x0 (B, ...) in [-1, 1] under the ODE model
        (``ode_likelihood.dequantized_bits_per_dim``; Hutchinson's divergence unless told otherwise)."""
        velocity, grid, prior_std = self.probability_flow(model, steps)
        return dequantized_bits_per_dim(velocity, x0, grid, prior_std=prior_std, **options)
