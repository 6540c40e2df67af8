"""Flow matching with the linear (rectified-flow) interpolant (Lipman et al. 2023; Liu et al. 2023; Esser et al.
2024, SD3), in the convention t = 0 data, t = 1 noise:

    x_t = (1 - t) x0 + t eps,    target velocity v = dx_t/dt = eps - x0,    loss ||v_theta(x_t, t) - v||^2,

with t ~ U[0, 1] or logit-normal (t = sigmoid(m + s z), z ~ N(0, 1); SD3's m = 0, s = 1). Sampling integrates
dx/dt = v_theta(x, t) from t = 1 (x ~ N(0, I)) to t = 0 on a uniform grid with Euler (1 evaluation per
step), midpoint or Heun (2 per step). Euler on this path is DDIM (eta = 0) in (1 - t, t) coordinates.

The network is told 1000 t (``time_scale``), the range of the DDPM timesteps the shared networks embed
(diffusers' flow-matching schedulers and SD3 feed their transformer 1000 t alike).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch

from .choices import check_choice
from .continuous import (
    ContinuousProcess,
    check_steps,
    initial_noise,
    normal_quantile,
    per_example,
    run_steps,
)
from .likelihoods import mean_flat
from .noise import Generators

FLOW_SAMPLERS = ("euler", "heun", "midpoint")
TIME_SAMPLINGS = ("uniform", "logit_normal")


def flow_ode_steps(velocity, x: torch.Tensor, times: list[float], method: str = "euler") -> Iterator[torch.Tensor]:
    """Integrate dx/dt = velocity(x, t) along ``times`` (any direction), yielding x after each step.
    euler: x + h v(x, t); midpoint: x + h v(x + h/2 v(x, t), t + h/2); heun: x + h/2 (v(x, t) + v(x_e, t + h))
    with x_e the Euler step."""
    check_choice("sampler", method, FLOW_SAMPLERS, "flow-matching sampler")
    for t, t_next in itertools.pairwise(times):
        h = t_next - t
        v = velocity(x, t)
        if method == "euler":
            x = x + h * v
        elif method == "midpoint":
            x = x + h * velocity(x + 0.5 * h * v, t + 0.5 * h)
        else:
            x = x + 0.5 * h * (v + velocity(x + h * v, t_next))
        yield x


class FlowMatchingProcess(ContinuousProcess):
    """The linear-interpolant flow-matching objective and its ODE samplers (see the module docstring).

    Args:
        time_sampling: training t distribution, "uniform" or "logit_normal".
        logit_mean, logit_std: m and s of the logit-normal (SD3: 0 and 1).
        time_scale: the network is told time_scale x t.
    """

    objective = "flow_matching"
    samplers = FLOW_SAMPLERS
    network_output = "the velocity"
    # loss terms: "loss" = "mse" = ||v_theta - v||^2 (mean over dims)

    def __init__(
        self,
        time_sampling: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        time_scale: float = 1000.0,
    ) -> None:
        check_choice("time_sampling", time_sampling, TIME_SAMPLINGS)
        if not logit_std > 0 or not time_scale > 0:
            raise ValueError(f"flow matching needs logit_std > 0 and time_scale > 0, got {logit_std}, {time_scale}.")
        self.time_sampling = time_sampling
        self.logit_mean, self.logit_std, self.time_scale = float(logit_mean), float(logit_std), float(time_scale)

    def model_evaluations(self, sampler: str, steps: int) -> int:
        """NFE of ``steps`` steps: Euler N, midpoint and Heun 2N."""
        return steps if sampler == "euler" else 2 * steps

    # ------------------------------------------------------------------ path and loss
    def training_time(self, u: torch.Tensor) -> torch.Tensor:
        """t (float64) for quantiles u (B,) in [0, 1): u itself, or sigmoid(m + s Phi^-1(u))."""
        u = u.to(torch.float64)
        if self.time_sampling == "uniform":
            return u
        return torch.sigmoid(self.logit_mean + self.logit_std * normal_quantile(u))

    def interpolate(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) x0 + t eps for t (B,)."""
        t = per_example(t, x0)
        return (1.0 - t) * x0 + t * noise

    def velocity(self, model, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v_theta(x, t) for t (B,) in [0, 1]."""
        return model(x, (self.time_scale * t).to(torch.float32)).to(x.dtype)

    def training_losses(
        self, model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-example terms (B,) for x0 (B, ...) at time quantiles t (B,): "loss" = "mse" = ||v_theta - v||^2."""
        time = self.training_time(t)
        noise = torch.randn_like(x0) if noise is None else noise
        mse = mean_flat((self.velocity(model, self.interpolate(x0, noise, time), time) - (noise - x0)) ** 2)
        return {"loss": mse, "mse": mse}

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        model,
        shape: tuple[int, ...],
        sampler: str = "euler",
        steps: int | None = 50,
        eta: float | None = None,
        spacing: str | None = None,
        generator: Generators = None,
        clip_denoised: bool = False,
        progress: bool = False,
        return_trajectory: bool = False,
        device: torch.device | str | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Samples (B, ...) from x ~ N(0, I) at t = 1 to t = 0 on ``steps`` uniform steps. ``spacing`` is the
        DDPM chain's timestep selection and does not apply; the ODE has no ``eta``. ``clip_denoised`` clamps the
        implied x0 = x - t v to [-1, 1] (the velocity becomes (x - x0) / t)."""
        steps = check_steps(steps, "flow_matching")
        if sampler not in self.samplers:
            raise ValueError(f"Unknown flow-matching sampler {sampler!r}; choose one of: {', '.join(self.samplers)}.")
        if eta not in (None, 0, 0.0):
            raise ValueError(f"eta={eta} is DDIM's; the flow-matching ODE samplers are deterministic.")
        times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
        x = initial_noise(shape, generator, device, model)

        def velocity(x_in: torch.Tensor, t: float) -> torch.Tensor:
            v = self.velocity(model, x_in, torch.full((x_in.shape[0],), t, dtype=torch.float64, device=x_in.device))
            if clip_denoised and t > 0:
                v = (x_in - (x_in - t * v).clamp(-1.0, 1.0)) / t
            return v

        states = flow_ode_steps(velocity, x, times, sampler)
        return run_steps(states, x, times, "t", f"flow_matching {sampler} sampling", progress, return_trajectory)

    # ------------------------------------------------------------------ likelihood
    def probability_flow(self, model, steps: int) -> tuple[Any, list[float], float]:
        """(velocity, grid, prior std) of dx/dt = v_theta(x, t) from the data (t = 0) to N(0, I) at t = 1
        over ``steps`` uniform steps."""

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            return self.velocity(model, x, torch.full((x.shape[0],), t, dtype=torch.float64, device=x.device))

        return velocity, torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64).tolist(), 1.0
