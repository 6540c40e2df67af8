"""Loss weightings (min-SNR, P2), zero terminal SNR and offset noise, against their closed forms.

The weightings are defined in x0 space, so three networks that make the *same* x0 prediction, one per
parameterisation, must get the same weighted loss; and each parameterisation's plain MSE is its gain (SNR for
eps, 1 for x0, SNR + 1 for v) times the x0 error.
"""

from __future__ import annotations

import pytest
import torch

from ddpm_lab.diffusion import (
    GaussianDiffusion,
    build_gaussian_diffusion,
    make_beta_schedule,
    mean_flat,
    rescale_zero_terminal_snr,
    v_from_x0_eps,
)
from ddpm_lab.diffusion.losses import training_noise

T = 1000
X0 = torch.randn(64, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
NOISE = torch.randn(64, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
STEPS = torch.randint(0, T, (64,), generator=torch.Generator().manual_seed(2))


def x0_guess(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Some fixed, imperfect x0 prediction."""
    return torch.tanh(0.8 * x_t) + 0.01 * t.to(x_t.dtype).reshape(-1, 1, 1, 1) / T


def networks_predicting_the_same_x0(diffusion_for: dict[str, GaussianDiffusion]):
    """model per mean_type, each outputting its parameterisation of x0_guess."""

    def make(mean_type: str):
        diffusion = diffusion_for[mean_type]

        def model(x_t, t):
            x0 = x0_guess(x_t, t)
            alpha_bar = diffusion.coef("alphas_cumprod", t, x_t)
            eps = (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
            return {"eps": eps, "x0": x0, "v": v_from_x0_eps(x0, eps, alpha_bar)}[mean_type]

        return model

    return {mean_type: make(mean_type) for mean_type in diffusion_for}


def snr_at(t: torch.Tensor) -> torch.Tensor:
    alpha_bar = torch.cumprod(1 - make_beta_schedule("linear", T), 0)[t]
    return alpha_bar / (1 - alpha_bar)


@pytest.mark.parametrize(
    ("weighting", "options", "x0_weight"),
    [
        ("min_snr", {"min_snr_gamma": 5.0}, lambda snr: snr.clamp(max=5.0)),
        ("p2", {"p2_gamma": 1.0, "p2_k": 1.0}, lambda snr: snr / (1.0 + snr)),
        ("p2", {"p2_gamma": 0.5, "p2_k": 2.0}, lambda snr: snr / (2.0 + snr) ** 0.5),
    ],
)
def test_a_weighting_means_the_same_objective_for_every_parameterisation(weighting, options, x0_weight):
    diffusions = {
        mean_type: GaussianDiffusion(make_beta_schedule("linear", T), mean_type, loss_weighting=weighting, **options)
        for mean_type in ("eps", "x0", "v")
    }
    models = networks_predicting_the_same_x0(diffusions)
    losses = {m: diffusions[m].training_losses(models[m], X0, STEPS, NOISE)["loss"] for m in diffusions}
    assert torch.allclose(losses["eps"], losses["x0"], rtol=1e-9) and torch.allclose(
        losses["v"], losses["x0"], rtol=1e-9
    )
    # ... and that objective is w(t) ||x0 - x0_hat||^2 with the paper's w.
    x_t = diffusions["x0"].q_sample(X0, STEPS, NOISE)
    x0_error = mean_flat((x0_guess(x_t, STEPS) - X0) ** 2)
    assert torch.allclose(losses["x0"], x0_weight(snr_at(STEPS)) * x0_error, rtol=1e-9)


def test_unweighted_losses_are_the_parameterisations_gains_times_the_x0_error():
    """v-loss = (SNR + 1) x0-loss and eps-loss = SNR x0-loss: so min-SNR on v is min(SNR, gamma) / (SNR + 1)."""
    diffusions = {m: GaussianDiffusion(make_beta_schedule("linear", T), m) for m in ("eps", "x0", "v")}
    models = networks_predicting_the_same_x0(diffusions)
    mse = {m: diffusions[m].training_losses(models[m], X0, STEPS, NOISE)["mse"] for m in diffusions}
    snr = snr_at(STEPS)
    assert torch.allclose(mse["eps"], snr * mse["x0"], rtol=1e-8)
    assert torch.allclose(mse["v"], (snr + 1) * mse["x0"], rtol=1e-8)
    weighted = GaussianDiffusion(make_beta_schedule("linear", T), "v", loss_weighting="min_snr")
    terms = weighted.training_losses(models["v"], X0, STEPS, NOISE)
    assert torch.equal(terms["mse"], mse["v"])  # the logged term stays the plain MSE
    assert torch.allclose(terms["loss"], snr.clamp(max=5.0) / (snr + 1) * mse["v"], rtol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_weighting": "snr"}, "Unknown loss_weighting 'snr'"),
        ({"loss_weighting": "min_snr", "loss_type": "kl", "var_type": "learned_range"}, "loss=kl has none"),
        ({"loss_weighting": "min_snr", "min_snr_gamma": 0.0}, "min_snr_gamma must be > 0"),
        ({"loss_weighting": "p2", "p2_k": -1.0}, "p2 needs p2_k > 0"),
        ({"offset_noise": -0.1}, "offset_noise must be >= 0"),
        ({"zero_terminal_snr": True}, "eps-prediction cannot give x0"),
        ({"zero_terminal_snr": "yes"}, "zero_terminal_snr must be true or false"),
    ],
)
def test_bad_weighting_and_schedule_options_fail_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_gaussian_diffusion("linear", 100, **kwargs)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_zero_terminal_snr_rescale(schedule):
    """Lin et al. 2024, Algorithm 1: sqrt(abar) shifted and scaled so abar_T = 0 and abar_1 is unchanged,
    and sqrt(abar) stays an affine function of the original sqrt(abar)."""
    betas = make_beta_schedule(schedule, T)
    root = torch.cumprod(1 - betas, 0).sqrt()
    rescaled = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0).sqrt()
    assert rescaled[-1] == 0 and torch.isclose(rescaled[0], root[0], rtol=1e-12)
    assert torch.allclose(rescaled, (root - root[-1]) / (root[0] - root[-1]) * root[0], atol=1e-12)
    diffusion = build_gaussian_diffusion(schedule, T, mean_type="v", zero_terminal_snr=True)
    x_T = diffusion.q_sample(X0, torch.full((64,), T - 1), NOISE)
    assert torch.allclose(x_T, NOISE)  # trained at pure noise: where sampling starts


def test_offset_noise_adds_a_per_channel_constant_of_the_given_strength():
    x0 = torch.zeros(4000, 3, 8, 8, dtype=torch.float64)
    torch.manual_seed(0)
    noise = training_noise(x0, 0.5)
    channel_means = noise.mean(dim=(2, 3))
    # Var of a channel's spatial mean: 1/64 from the white noise plus 0.5^2 from the offset.
    assert abs(channel_means.var().item() - (1 / 64 + 0.25)) < 0.02
    assert abs(noise.var().item() - 1.25) < 0.02
    with pytest.raises(ValueError, match="no spatial dims"):
        training_noise(torch.zeros(8, 2), 0.1)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_zero_terminal_snr_rescale_equals_diffusers(schedule):
    """Against diffusers' own rescale_zero_terminal_snr (the one its DDIM/DDPM schedulers apply), float64."""
    theirs = pytest.importorskip("diffusers.schedulers.scheduling_ddim").rescale_zero_terminal_snr
    betas = make_beta_schedule(schedule, T)
    assert torch.allclose(rescale_zero_terminal_snr(betas), theirs(betas.clone()), rtol=0, atol=1e-12)
