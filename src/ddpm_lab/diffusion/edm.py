"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models").

The process is x = y + sigma n with n ~ N(0, I) (sigma(t) = t, s(t) = 1), so the probability-flow ODE is
dx/dsigma = (x - D(x; sigma)) / sigma. The network F is wrapped by the preconditioning of Table 1:

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
    c_skip = sigma_d^2 / (sigma^2 + sigma_d^2)      c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_d^2)          c_noise = ln(sigma) / 4

trained with ln sigma ~ N(P_mean, P_std^2) and the loss lambda(sigma) ||D(y + sigma n; sigma) - y||^2,
lambda = 1 / c_out^2 = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 (eq. 8 and section 5), and sampled with
Heun's method (Algorithm 1) or Euler, with the optional stochastic churn of Algorithm 2, over the rho-ramp
sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, sigma_N = 0 (eq. 5).

The network is told ``noise_label_scale`` x c_noise: EDM's networks embed ln(sigma)/4 directly, while the
shared ddpm-lab networks embed DDPM's integer t in [0, T) with sinusoids of periods up to 10^4. The default
scale 250 spreads sigma in [0.002, 80] over ~660 units of that embedding (EDM's own VP preconditioning
likewise feeds c_noise = 999 t to a network built for DDPM timesteps).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import torch

from .continuous import (
    ContinuousProcess,
    Denoiser,
    check_steps,
    initial_noise,
    normal_quantile,
    per_example,
    run_steps,
)
from .likelihoods import mean_flat
from .noise import Generators, randn

EDM_SAMPLERS = ("heun", "euler")
# EDM's sigma_data for images scaled to [-1, 1]; a DataModule may declare its own (``sigma_data`` attribute).
IMAGE_SIGMA_DATA = 0.5


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """The N = ``steps`` noise levels of EDM eq. 5, descending, plus the final 0: float64 (N + 1,)."""
    ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def edm_sampler_steps(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    heun: bool = True,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    generator: Generators = None,
) -> Iterator[torch.Tensor]:
    """EDM Algorithm 2 (Algorithm 1 when ``s_churn`` = 0): from x at sigmas[0] down the descending ``sigmas``
    (ending at 0), yielding x after each step. ``denoise(x, sigma)`` is D(x; sigma). Heun's correction is
    skipped on the step to sigma = 0 (where it would divide by 0), so N steps cost 2N - 1 evaluations."""
    steps = len(sigmas) - 1
    for sigma, sigma_next in itertools.pairwise(sigmas):
        gamma = min(s_churn / steps, math.sqrt(2.0) - 1.0) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1.0 + gamma)
        if gamma > 0:  # raise the noise level to sigma_hat with fresh noise ("churn")
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * randn(tuple(x.shape), generator, x.device).to(
                x.dtype
            )
        slope = (x - denoise(x, sigma_hat)) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * slope
        if heun and sigma_next > 0:
            slope_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * 0.5 * (slope + slope_next)
        x = x_next
        yield x


class EDMProcess(ContinuousProcess):
    """EDM's preconditioned denoiser, training loss and sampler (see the module docstring).

    Args:
        sigma_min, sigma_max: the sampler's noise range (EDM: 0.002, 80).
        sigma_data: the data's standard deviation (EDM: 0.5 for images in [-1, 1]; 1 for standardised data).
        p_mean, p_std: the training log-normal, ln sigma ~ N(p_mean, p_std^2) (EDM: -1.2, 1.2).
        rho: the sampler's sigma ramp exponent (EDM: 7).
        s_churn, s_tmin, s_tmax, s_noise: Algorithm 2's stochasticity (0 churn: the deterministic ODE).
        noise_label_scale: the network is told noise_label_scale x ln(sigma) / 4 (see the module docstring).
    """

    objective = "edm"
    samplers = EDM_SAMPLERS
    network_output = "F, shaped like the data"
    # loss terms: "loss" (lambda-weighted) and "mse" (||D - y||^2)

    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = IMAGE_SIGMA_DATA,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        rho: float = 7.0,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        noise_label_scale: float = 250.0,
    ) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"EDM needs 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}.")
        for name, value in (("sigma_data", sigma_data), ("p_std", p_std), ("rho", rho), ("s_noise", s_noise)):
            if not value > 0:
                raise ValueError(f"EDM's {name} must be > 0, got {value}.")
        if s_churn < 0 or s_tmin < 0 or s_tmax < s_tmin:
            raise ValueError(
                f"EDM's churn needs s_churn >= 0 and 0 <= s_tmin <= s_tmax, got {s_churn}, {s_tmin}, {s_tmax}."
            )
        if not noise_label_scale > 0:
            raise ValueError(f"noise_label_scale must be > 0, got {noise_label_scale}.")
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)
        self.p_mean, self.p_std, self.rho = float(p_mean), float(p_std), float(rho)
        self.churn = {
            "s_churn": float(s_churn),
            "s_tmin": float(s_tmin),
            "s_tmax": float(s_tmax),
            "s_noise": float(s_noise),
        }
        self.noise_label_scale = float(noise_label_scale)

    def model_evaluations(self, sampler: str, steps: int) -> int:
        """NFE of ``steps`` steps: Heun 2N - 1 (no correction on the last step), Euler N."""
        return 2 * steps - 1 if sampler == "heun" else steps

    # ------------------------------------------------------------------ preconditioning (Table 1)
    def preconditioning(self, sigma: torch.Tensor) -> dict[str, torch.Tensor]:
        """c_skip, c_out, c_in, c_noise (each shaped like sigma) and the loss weight lambda = 1 / c_out^2."""
        sigma = sigma.to(torch.float64)
        total = sigma**2 + self.sigma_data**2
        c_out = sigma * self.sigma_data / total.sqrt()
        return {
            "c_skip": self.sigma_data**2 / total,
            "c_out": c_out,
            "c_in": total.rsqrt(),
            "c_noise": sigma.log() / 4.0,
            "weight": 1.0 / c_out**2,
        }

    def denoise(self, model, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x; sigma) for x (B, ...) and sigma (B,): the preconditioned network's estimate of y."""
        c = self.preconditioning(sigma)
        output = model(x * per_example(c["c_in"], x), (self.noise_label_scale * c["c_noise"]).to(torch.float32))
        return per_example(c["c_skip"], x) * x + per_example(c["c_out"], x) * output.to(x.dtype)

    def training_sigma(self, u: torch.Tensor) -> torch.Tensor:
        """sigma = exp(P_mean + P_std Phi^-1(u)) (float64), for quantiles u (B,) in [0, 1)."""
        return torch.exp(self.p_mean + self.p_std * normal_quantile(u.to(torch.float64)))

    def training_losses(
        self, model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-example terms (B,) for data y = x0 (B, ...) at time quantiles t (B,): "loss" =
        lambda(sigma) ||D - y||^2 (mean over dims) and "mse" = ||D - y||^2."""
        sigma = self.training_sigma(t)
        noise = torch.randn_like(x0) if noise is None else noise
        x = x0 + per_example(sigma, x0) * noise
        mse = mean_flat((self.denoise(model, x, sigma) - x0) ** 2)
        weight = self.preconditioning(sigma)["weight"].to(mse.dtype)
        return {"loss": weight * mse, "mse": mse}

    # ------------------------------------------------------------------ sampling
    def sigmas(self, steps: int) -> torch.Tensor:
        return karras_sigmas(steps, self.sigma_min, self.sigma_max, self.rho)

    def sample(
        self,
        model,
        shape: tuple[int, ...],
        sampler: str = "heun",
        steps: int | None = 18,
        eta: float | None = None,
        spacing: str | None = None,
        generator: Generators = None,
        clip_denoised: bool = False,
        progress: bool = False,
        return_trajectory: bool = False,
        device: torch.device | str | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Samples (B, ...) from x ~ N(0, sigma_max^2 I) down the rho-ramp of ``steps`` sigmas with ``sampler``
        heun or euler. ``spacing`` is the DDPM chain's timestep selection and does not apply (the ramp is EDM's
        own); stochasticity is the process's s_churn, not ``eta``. ``clip_denoised`` clamps D to [-1, 1]."""
        steps = check_steps(steps, self.objective)
        if sampler not in self.samplers:
            raise ValueError(f"Unknown EDM sampler {sampler!r}; choose one of: {', '.join(self.samplers)}.")
        if eta not in (None, 0, 0.0):
            raise ValueError(f"eta={eta} is DDIM's; EDM's stochasticity is s_churn (process.s_churn).")
        sigmas = self.sigmas(steps).tolist()
        x = initial_noise(shape, generator, device, model) * sigmas[0]

        def denoise(x_in: torch.Tensor, sigma: float) -> torch.Tensor:
            d = self.denoise(model, x_in, torch.full((x_in.shape[0],), sigma, dtype=torch.float64, device=x_in.device))
            return d.clamp(-1.0, 1.0) if clip_denoised else d

        states = edm_sampler_steps(denoise, x, sigmas, sampler == "heun", generator=generator, **self.churn)
        return run_steps(states, x, sigmas, "sigma", f"edm {sampler} sampling", progress, return_trajectory)

    # ------------------------------------------------------------------ likelihood
    def probability_flow(self, model, steps: int) -> tuple[Any, list[float], float]:
        """(velocity, grid, prior std) of the ODE dx/dsigma = (x - D(x; sigma)) / sigma from the data end
        (sigma_min) to the prior N(0, sigma_max^2 I) over the rho-ramp's ``steps`` steps."""

        def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
            s = torch.full((x.shape[0],), sigma, dtype=torch.float64, device=x.device)
            return (x - self.denoise(model, x, s)) / sigma

        return velocity, self.sigmas(steps).flip(0)[1:].tolist(), self.sigma_max
