"""Exact log-likelihood through the probability-flow ODE (Chen et al. 2018; Grathwohl et al. 2019 FFJORD;
Song et al. 2021, section D.2) for the continuous-time objectives.

Integrating dx/dtau = f(x, tau) from the data end (tau_0) to the noise end (tau_K), the instantaneous change of
variables gives

    log p_0(x_0) = log p_K(x_K) + int_{tau_0}^{tau_K} div f(x_tau, tau) dtau,

with p_K the Gaussian prior. The divergence is exact (one backward pass per dimension: 2-D data) or
Hutchinson's estimate eps^T (df/dx) eps with one Rademacher eps per example held for the whole path (images).
The ODE is solved with Heun's method on the given grid. This is a likelihood of the ODE model, not DDPM's
variational bound: the two are logged under different names and never averaged together.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

DIVERGENCES = ("exact", "hutchinson")
Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def _velocity_and_divergence(
    velocity: Velocity, x: torch.Tensor, tau: float, probe: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x, tau) (detached) and its divergence (B,): exact when ``probe`` is None, else Hutchinson's."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f = velocity(x, tau)
        if probe is not None:
            (grad,) = torch.autograd.grad((f * probe).sum(), x)
            div = (grad * probe).flatten(1).sum(1)
        else:
            flat = f.flatten(1)
            div = torch.zeros(x.shape[0], dtype=f.dtype, device=x.device)
            for i in range(flat.shape[1]):
                (grad,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i + 1 < flat.shape[1])
                div = div + grad.flatten(1)[:, i]
    return f.detach(), div.detach()


def ode_log_likelihood(
    velocity: Velocity,
    x: torch.Tensor,
    grid: list[float],
    prior_std: float = 1.0,
    divergence: str = "exact",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """log p(x) in nats (B,) float64 for x (B, ...) at grid[0], under the ODE ``velocity(x, tau)`` and the
    prior N(0, prior_std^2 I) at grid[-1] (Heun's method over ``grid``, 2 evaluations per step)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"Unknown divergence {divergence!r}; choose one of: {', '.join(DIVERGENCES)}.")
    probe = None
    if divergence == "hutchinson":
        draw = generator.device if generator is not None else x.device
        probe = (torch.randint(0, 2, x.shape, generator=generator, device=draw) * 2 - 1).to(x.device, x.dtype)
    integral = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for tau, tau_next in tqdm(list(itertools.pairwise(grid)), desc="ode nll", disable=not progress):
        h = tau_next - tau
        f0, div0 = _velocity_and_divergence(velocity, x, tau, probe)
        x_euler = x + h * f0
        f1, div1 = _velocity_and_divergence(velocity, x_euler, tau_next, probe)
        x = x + 0.5 * h * (f0 + f1)
        integral += 0.5 * h * (div0 + div1).double()
    dims = x[0].numel()
    z = x.double().flatten(1) / prior_std
    prior = -0.5 * (z**2).sum(1) - dims * (math.log(prior_std) + 0.5 * math.log(2 * math.pi))
    return prior + integral


def dequantized_bits_per_dim(
    velocity: Velocity,
    x0: torch.Tensor,
    grid: list[float],
    prior_std: float = 1.0,
    divergence: str = "hutchinson",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Bits/dim (B,) of 8-bit data x0 (B, ...) scaled to [-1, 1] (x = k / 127.5 - 1): uniform dequantisation
    within each value's bin of width 2/255, then -log p / (D ln 2) + log2(127.5), an upper bound on the
    discrete NLL (Theis et al. 2016; as Song et al. 2021 report for their ODE models)."""
    draw = generator.device if generator is not None else x0.device
    u = torch.rand(x0.shape, generator=generator, device=draw).to(x0.device, x0.dtype)
    x = x0 + (u - 0.5) * (2.0 / 255.0)
    log_p = ode_log_likelihood(velocity, x, grid, prior_std, divergence, generator, progress)
    return -log_p / (x0[0].numel() * math.log(2.0)) + math.log2(127.5)
