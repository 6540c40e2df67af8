"""Few-step samplers for a discrete VP diffusion, driven by a denoiser x0_hat(x_t, i).

All of them walk a descending list of kept timesteps t_0 > ... > t_{k-1} and then to the clean end (abar = 1).
With alpha_i = sqrt(abar_{t_i}), s_i = sqrt(1 - abar_{t_i}), the VE noise level sigma_i = s_i / alpha_i and the
log-SNR half lambda_i = log(alpha_i / s_i), the probability-flow ODE of the VP model in y = x / alpha is
dy / dsigma = eps_hat (Song et al. 2021; Karras et al. 2022, eq. 4 with s(t) = alpha), eps_hat = (y - x0_hat) /
sigma. The samplers are:
  euler            Euler in sigma (k NFE): identical to DDIM with eta = 0 (Karras et al., section 3)
  heun             Heun's 2nd-order method in sigma (2k - 1 NFE; Euler on the last step to sigma = 0)
                   (Karras et al. 2022, Algorithm 1)
  euler_ancestral  Euler to sigma_down plus fresh noise sigma_up (k-diffusion; eta scales sigma_up, 1 = DDPM-like)
  dpmpp_2m         DPM-Solver++(2M) in lambda with x0 predictions, 1st order on the first step and on the
                   step to sigma = 0 (Lu et al. 2022, Algorithm 2)
  ipndm            improved PNDM: 4th-order Adams-Bashforth on eps_hat in sigma, lower orders to warm up
                   (Zhang & Chen 2023, DEIS appendix; zju-pi/diff-sampler)
Each step costs the coefficients of one timestep pair as Python floats, so no table moves to the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from .noise import Generators, randn
from .respacing import MIN_ALPHA_BAR

ODE_SAMPLERS = ("euler", "heun", "euler_ancestral", "dpmpp_2m", "ipndm")
# Adams-Bashforth weights on (eps_n, eps_{n-1}, ...) for equal steps, by order.
_ADAMS_BASHFORTH = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]


def noise_levels(alphas_cumprod: torch.Tensor, timesteps: list[int]) -> tuple[list[float], list[float]]:
    """(alpha, s) for each descending timestep and for the clean end (alpha = 1, s = 0). alpha-bar is floored
    at 2^-24 so that a zero-terminal-SNR schedule has a finite sigma_max (as diffusers does)."""
    abar = [*alphas_cumprod[torch.as_tensor(timesteps)].to(torch.float64).clamp(min=MIN_ALPHA_BAR).tolist(), 1.0]
    return [a**0.5 for a in abar], [(1.0 - a) ** 0.5 for a in abar]


# euler_ancestral's eta where none is given: k-diffusion's default, the full ancestral noise (eta=0 is Euler).
ANCESTRAL_ETA = 1.0


def solver_steps(
    sampler: str,
    denoise: Denoiser,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: list[int],
    eta: float | None = None,
    generator: Generators = None,
) -> Iterator[torch.Tensor]:
    """Run ``sampler`` from x (B, ...) at timesteps[0] (descending) to x0; yield the state after each step.

    ``denoise(x, i)`` returns x0_hat (shaped like x) at timestep ``timesteps[i]``.
    """
    if sampler not in ODE_SAMPLERS:
        raise ValueError(f"Unknown solver {sampler!r}; choose one of: {', '.join(ODE_SAMPLERS)}.")
    eta = ANCESTRAL_ETA if eta is None else eta
    alpha, s = noise_levels(alphas_cumprod, timesteps)
    sigma = [si / ai for ai, si in zip(alpha, s, strict=True)]
    last = len(timesteps) - 1
    history: list[torch.Tensor] = []  # x0_hat (dpmpp_2m) or eps_hat (ipndm), newest last
    for i in range(len(timesteps)):
        x0 = denoise(x, i)
        eps = (x - alpha[i] * x0) / s[i]
        if sampler == "euler" or (sampler == "heun" and i == last):
            x = alpha[i + 1] * x0 + s[i + 1] * eps
        elif sampler == "heun":
            x_euler = alpha[i + 1] * x0 + s[i + 1] * eps
            x0_next = denoise(x_euler, i + 1)
            eps_next = (x_euler - alpha[i + 1] * x0_next) / s[i + 1]
            x = alpha[i + 1] * (x / alpha[i] + (sigma[i + 1] - sigma[i]) * 0.5 * (eps + eps_next))
        elif sampler == "euler_ancestral":
            # sigma_up^2 = sigma'^2 (sigma^2 - sigma'^2) / sigma^2, scaled by eta, never above sigma'
            up = (
                0.0
                if i == last
                else min(sigma[i + 1], eta * sigma[i + 1] * (1 - (sigma[i + 1] / sigma[i]) ** 2) ** 0.5)
            )
            down = (sigma[i + 1] ** 2 - up**2) ** 0.5
            y = x / alpha[i] + (down - sigma[i]) * eps
            if up > 0:
                y = y + up * randn(tuple(x.shape), generator, x.device).to(x.dtype)
            x = alpha[i + 1] * y
        elif sampler == "dpmpp_2m":
            if i == last:  # to sigma = 0: lambda = inf, and the update is x0_hat itself
                x = x0
            else:
                h = math.log(alpha[i + 1] / s[i + 1]) - math.log(alpha[i] / s[i])
                h_prev = math.log(alpha[i] / s[i]) - math.log(alpha[i - 1] / s[i - 1]) if i > 0 else 0.0
                phi = math.expm1(-h)
                x = (s[i + 1] / s[i]) * x - alpha[i + 1] * phi * x0
                # 2nd order (midpoint): D1 = (x0_n - x0_{n-1}) / r, r = h_{n-1} / h_n. Not after a step that did
                # not move (h_{n-1} = 0: two timesteps at the 2^-24 alpha-bar floor of a zero-terminal-SNR
                # schedule), where r = 0.
                if history and h_prev > 0 and h > 0:
                    x = x - 0.5 * alpha[i + 1] * phi * (x0 - history[-1]) * (h / h_prev)
            history = [x0]
        else:  # ipndm
            history = [*history[-3:], eps]
            weights = _ADAMS_BASHFORTH[len(history)]
            slope = sum(w * e for w, e in zip(weights, reversed(history), strict=False))
            x = alpha[i + 1] * (x / alpha[i] + (sigma[i + 1] - sigma[i]) * slope)
        yield x


def model_evaluations(sampler: str, steps: int) -> int:
    """Network evaluations (NFE) a ``steps``-step run of ``sampler`` costs (Heun: 2 per step but the last)."""
    return 2 * steps - 1 if sampler == "heun" else steps
