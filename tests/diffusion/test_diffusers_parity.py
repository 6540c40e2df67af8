"""Step-for-step parity with diffusers' DDPMScheduler and DDIMScheduler (float64, same betas, same noise).

A fixed deterministic "network" drives both chains from the same x_T; every intermediate x_t must agree to
1e-4 (in float64 they agree far closer). t = 0 carries no noise in either library, so the only place where
the variances differ (beta-tilde_0 clipping, fixed_large's beta-tilde_1 at t = 0) never reaches a sample.
"""

from __future__ import annotations

import pytest
import torch

from ddpm_lab.diffusion import GaussianDiffusion, make_beta_schedule

diffusers = pytest.importorskip("diffusers")

T, SHAPE = 50, (3, 2, 4, 4)
PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def network(learned_variance: bool):
    """Deterministic in (x_t, t); a learned variance half in (-1, 1), as learned_range expects."""

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        level = t.to(x.dtype).reshape(-1, 1, 1, 1) / T
        mean = torch.tanh(0.7 * x + level) * 0.9
        return torch.cat([mean, torch.tanh(x - level)], 1) if learned_variance else mean

    return model


def to_float64(scheduler, diffusion: GaussianDiffusion) -> None:
    """diffusers keeps float32 tables (from float32 betas): give it the same float64 ones."""
    scheduler.betas = diffusion.betas.clone()
    scheduler.alphas = 1.0 - diffusion.betas
    scheduler.alphas_cumprod = diffusion.alphas_cumprod.clone()
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)


def ours(mean_type: str, var_type: str) -> GaussianDiffusion:
    loss = "hybrid" if var_type == "learned_range" else "mse"
    return GaussianDiffusion(make_beta_schedule("linear", T), mean_type, var_type, loss)


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("mean_type", ["eps", "x0", "v"])
def test_ddpm_chain_matches_diffusers_step_for_step(mean_type, var_type):
    diffusion = ours(mean_type, var_type)
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=T,
        trained_betas=diffusion.betas.numpy(),
        variance_type=var_type,
        prediction_type=PREDICTION[mean_type],
        clip_sample=False,
    )
    to_float64(scheduler, diffusion)
    scheduler.set_timesteps(T)
    model = network(diffusion.learned_variance)
    x_ours = x_theirs = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in scheduler.timesteps.tolist():
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t + 1), dtype=torch.float64)
        step = torch.full((SHAPE[0],), t, dtype=torch.long)
        x_ours = diffusion.p_sample(model(x_ours, step), x_ours, step, noise=noise)
        out = model(x_theirs, step)
        x_theirs = scheduler.step(out, t, x_theirs, generator=torch.Generator().manual_seed(t + 1)).prev_sample
        assert torch.allclose(x_ours, x_theirs, atol=1e-4, rtol=0), f"t={t}"
    assert torch.allclose(x_ours, x_theirs, rtol=1e-10, atol=1e-10)  # float64 throughout: far below 1e-4


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("mean_type", ["eps", "x0", "v"])
def test_ddim_chain_matches_diffusers_step_for_step(mean_type, var_type, eta):
    """DDIM over diffusers' 10-step "leading" subsequence; a learned variance half is ignored (DDIM uses the
    mean part only), so diffusers gets the mean half."""
    diffusion = ours(mean_type, var_type)
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=T,
        trained_betas=diffusion.betas.numpy(),
        prediction_type=PREDICTION[mean_type],
        clip_sample=False,
        set_alpha_to_one=True,
    )
    to_float64(scheduler, diffusion)
    scheduler.set_timesteps(10)
    stride = T // 10
    model = network(diffusion.learned_variance)
    x_ours = x_theirs = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in scheduler.timesteps.tolist():
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t + 1), dtype=torch.float64)
        step = torch.full((SHAPE[0],), t, dtype=torch.long)
        prev = t - stride if t - stride >= 0 else -1
        x_ours = diffusion.ddim_step(model(x_ours, step), x_ours, step, prev, eta=eta, noise=noise)
        out = model(x_theirs, step)[:, : SHAPE[1]]
        x_theirs = scheduler.step(out, t, x_theirs, eta=eta, variance_noise=noise).prev_sample
        assert torch.allclose(x_ours, x_theirs, atol=1e-4, rtol=0), f"t={t}"
    assert torch.allclose(x_ours, x_theirs, rtol=1e-10, atol=1e-10)  # float64 throughout: far below 1e-4


@pytest.mark.parametrize("spacing", ["uniform", "trailing"])
@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("mean_type", ["eps", "v"])
def test_respaced_ancestral_chain_matches_diffusers(mean_type, var_type, spacing):
    """IDDPM's respacing rule (Nichol & Dhariwal 2021, sec. 4), as diffusers' DDPMScheduler applies it to custom
    timesteps: each kept step's beta is 1 - abar_t / abar_prev over the kept steps, and a learned range
    interpolates between *that* beta and its beta-tilde. 8 of 50 steps, every state within 1e-10 (relative,
    float64). The one difference: a trailing chain's last kept step is t > 0, where diffusers still adds noise
    (for fixed_large with variance 1 - abar_t); ddpm-lab's last step is the decoder's and returns the mean, i.e.
    diffusers' pred_original_sample, as IDDPM's chains (which always keep t = 0) do."""
    diffusion = ours(mean_type, var_type)
    chain = diffusion.respaced(8, spacing)
    kept = diffusion.spaced_timesteps(8, spacing)
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=T,
        trained_betas=diffusion.betas.numpy(),
        variance_type=var_type,
        prediction_type=PREDICTION[mean_type],
        clip_sample=False,
    )
    to_float64(scheduler, diffusion)
    scheduler.set_timesteps(timesteps=kept[::-1])
    model = network(diffusion.learned_variance)
    x_ours = x_theirs = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for index, t in zip(reversed(range(len(kept))), scheduler.timesteps.tolist(), strict=True):
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t + 1), dtype=torch.float64)
        step = torch.full((SHAPE[0],), index, dtype=torch.long)
        x_ours = chain.p_sample(model(x_ours, chain.model_timesteps(step)), x_ours, step, noise=noise)
        out = model(x_theirs, torch.full((SHAPE[0],), t, dtype=torch.long))
        result = scheduler.step(out, t, x_theirs, generator=torch.Generator().manual_seed(t + 1))
        x_theirs = result.prev_sample if index > 0 else result.pred_original_sample
        assert torch.allclose(x_ours, x_theirs, rtol=1e-10, atol=1e-10), f"t={t}"
