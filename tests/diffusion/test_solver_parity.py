"""Step-for-step parity of the few-step solvers with diffusers' schedulers implementing the same algorithm:
DPMSolverMultistepScheduler (dpmsolver++, order 2), EulerDiscreteScheduler and HeunDiscreteScheduler, over the
"trailing" spacing (the one whose timesteps are integers in both libraries), float64, same betas, same x_T.

diffusers' Euler/Heun work in the VE variable y = x / sqrt(abar); their states are compared as VP states
y / sqrt(sigma^2 + 1), i.e. what the network sees (scale_model_input).
"""

from __future__ import annotations

import pytest
import torch

from ddpm_lab.diffusion import GaussianDiffusion, make_beta_schedule
from ddpm_lab.diffusion.sampling import denoiser
from ddpm_lab.diffusion.solvers import solver_steps

diffusers = pytest.importorskip("diffusers")

T, STEPS, SHAPE = 50, 8, (2, 3, 4, 4)  # 3 channels: diffusers keeps model_output[:, :3] as the mean half
PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def network(diffusion: GaussianDiffusion):
    """A plausible denoiser, deterministic in (x_t, t): the optimal x0 of N(0.3, 0.5^2) data bent by a tanh
    (so solvers of different order really differ), in the diffusion's parameterisation; a learned variance half
    in (-1, 1). t may be a float (diffusers' Euler passes float timesteps); it is rounded to index the tables."""
    alpha_bars = diffusion.alphas_cumprod

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alpha_bars[t.round().long()].to(x.dtype).reshape(-1, 1, 1, 1)
        x0 = 0.3 + a.sqrt() * 0.25 * (x - a.sqrt() * 0.3) / (a * 0.25 + 1 - a) + 0.1 * torch.tanh(x)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        mean = {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[diffusion.mean_type]
        return torch.cat([mean, torch.tanh(x)], 1) if diffusion.learned_variance else mean

    return model


def ours(mean_type: str, var_type: str = "fixed_small") -> GaussianDiffusion:
    loss = "hybrid" if var_type == "learned_range" else "mse"
    return GaussianDiffusion(make_beta_schedule("linear", T), mean_type, var_type, loss)


def our_states(diffusion: GaussianDiffusion, sampler: str, x_T: torch.Tensor) -> tuple[list[int], list[torch.Tensor]]:
    timesteps = diffusion.spaced_timesteps(STEPS, "trailing")[::-1]
    denoise = denoiser(diffusion, network(diffusion), timesteps)
    return timesteps, list(solver_steps(sampler, denoise, x_T, diffusion.alphas_cumprod, timesteps))


def initial_noise() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("var_type", ["fixed_small", "learned_range"])
@pytest.mark.parametrize("mean_type", ["eps", "x0", "v"])
def test_dpm_solver_pp_2m_matches_diffusers(mean_type, var_type):
    diffusion = ours(mean_type, var_type)
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T,
        trained_betas=diffusion.betas.numpy(),
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        prediction_type=PREDICTION[mean_type],
        # diffusers drops a learned variance half only for eps models: the others get the mean half below.
        variance_type="learned_range" if var_type == "learned_range" and mean_type == "eps" else None,
        timestep_spacing="trailing",
        thresholding=False,
    )
    scheduler.set_timesteps(STEPS)
    x_T = initial_noise()
    timesteps, states = our_states(diffusion, "dpmpp_2m", x_T)
    assert scheduler.timesteps.tolist() == timesteps
    model, x = network(diffusion), x_T
    for t, ours_x in zip(timesteps, states, strict=True):
        step = torch.full((SHAPE[0],), t, dtype=torch.long)
        output = model(x, step)
        output = output if scheduler.config.variance_type else output[:, : SHAPE[1]]
        x = scheduler.step(output, t, x).prev_sample
        assert torch.allclose(ours_x, x.to(torch.float64), atol=1e-4, rtol=0), f"t={t}"


@pytest.mark.parametrize("mean_type", ["eps", "x0", "v"])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_euler_and_heun_match_diffusers(sampler, mean_type):
    diffusion = ours(mean_type)
    cls = diffusers.EulerDiscreteScheduler if sampler == "euler" else diffusers.HeunDiscreteScheduler
    scheduler = cls(
        num_train_timesteps=T,
        trained_betas=diffusion.betas.numpy(),
        prediction_type=PREDICTION[mean_type],
        timestep_spacing="trailing",
    )
    scheduler.set_timesteps(STEPS)
    x_T = initial_noise()
    timesteps, states = our_states(diffusion, sampler, x_T)
    assert list(dict.fromkeys(int(t) for t in scheduler.timesteps)) == timesteps
    model = network(diffusion)
    y = x_T * (scheduler.sigmas[0].to(torch.float64) ** 2 + 1) ** 0.5  # the VE state of the same x_T
    theirs = []
    for index, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(y, t)
        y = scheduler.step(model(model_input, t.expand(SHAPE[0])), t, y).prev_sample
        # A full step ends after every Euler call; for Heun, after each corrector (odd) call and after the last,
        # first-order, call to sigma = 0.
        if sampler == "euler" or index % 2 == 1 or index == len(scheduler.timesteps) - 1:
            sigma_next = scheduler.sigmas[scheduler.step_index].to(torch.float64)
            theirs.append(y.to(torch.float64) / (sigma_next**2 + 1) ** 0.5)
    assert len(theirs) == len(states) == STEPS
    for t, ours_x, their_x in zip(timesteps, states, theirs, strict=True):
        assert torch.allclose(ours_x, their_x, atol=1e-4, rtol=0), f"t={t}"


@pytest.mark.parametrize("mean_type", ["eps", "v"])
def test_euler_ancestral_default_eta_matches_diffusers(mean_type):
    """With no eta given, euler_ancestral is the full ancestral sampler, as k-diffusion's default (eta=1) and
    diffusers' EulerAncestralDiscreteScheduler: same x_T, same per-step noise (one float32 draw per step from
    one seeded generator on each side), every state within 1e-4 (diffusers steps in float32). Its eta used to
    default to 0, which is plain deterministic Euler."""
    diffusion = ours(mean_type)
    scheduler = diffusers.EulerAncestralDiscreteScheduler(
        num_train_timesteps=T,
        trained_betas=diffusion.betas.numpy(),
        prediction_type=PREDICTION[mean_type],
        timestep_spacing="trailing",
    )
    scheduler.set_timesteps(STEPS)
    x_T = initial_noise()
    timesteps = diffusion.spaced_timesteps(STEPS, "trailing")[::-1]
    denoise = denoiser(diffusion, network(diffusion), timesteps)
    mine = torch.Generator().manual_seed(3)
    states = list(solver_steps("euler_ancestral", denoise, x_T, diffusion.alphas_cumprod, timesteps, generator=mine))
    assert [int(t) for t in scheduler.timesteps] == timesteps
    model, theirs = network(diffusion), torch.Generator().manual_seed(3)
    y = x_T * (scheduler.sigmas[0].to(torch.float64) ** 2 + 1) ** 0.5
    for t, ours_x in zip(scheduler.timesteps, states, strict=True):
        output = model(scheduler.scale_model_input(y, t), t.expand(SHAPE[0])).float()
        y = scheduler.step(output, t, y, generator=theirs).prev_sample.to(torch.float64)
        sigma_next = scheduler.sigmas[scheduler.step_index].to(torch.float64)
        assert torch.allclose(ours_x, y / (sigma_next**2 + 1) ** 0.5, atol=1e-4, rtol=0), f"t={t}"
    deterministic = list(solver_steps("euler_ancestral", denoise, x_T, diffusion.alphas_cumprod, timesteps, eta=0.0))
    euler = list(solver_steps("euler", denoise, x_T, diffusion.alphas_cumprod, timesteps))
    assert torch.allclose(deterministic[-1], euler[-1], atol=1e-10, rtol=0)  # eta=0: plain Euler
    assert not torch.allclose(states[-1], euler[-1], atol=1e-2)


def test_spacings_map_onto_diffusers_timestep_spacing():
    """README's mapping: our uniform is DDIMScheduler's and EulerDiscreteScheduler's "linspace" (t = 0 kept),
    trailing is "trailing" in all three; DPMSolverMultistepScheduler's "linspace" (its default) drops t = 0 and
    is none of ours (closest: trailing, which differs by rounding)."""
    diffusion, k = GaussianDiffusion(make_beta_schedule("linear", 1000)), 10

    def theirs(cls, spacing):
        scheduler = cls(num_train_timesteps=1000, timestep_spacing=spacing)
        scheduler.set_timesteps(k)
        return [int(t) for t in scheduler.timesteps]

    uniform, trailing = (diffusion.spaced_timesteps(k, s)[::-1] for s in ("uniform", "trailing"))
    for cls in (diffusers.DDIMScheduler, diffusers.EulerDiscreteScheduler):
        assert theirs(cls, "linspace") == uniform
    for cls in (diffusers.DDIMScheduler, diffusers.EulerDiscreteScheduler, diffusers.DPMSolverMultistepScheduler):
        assert theirs(cls, "trailing") == trailing
    dpm_default = theirs(diffusers.DPMSolverMultistepScheduler, "linspace")
    assert 0 not in dpm_default and dpm_default not in (uniform, trailing)
