"""EDM (Karras et al. 2022) against diffusers' EDMEulerScheduler (an implementation we did not write), scipy and
closed forms: preconditioning, sigma ramp, Euler steps, the log-normal training sigmas, the loss weight, the
Gaussian oracle and the probability-flow likelihood."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from ddpm_lab.diffusion import EDMProcess, karras_sigmas, ode_log_likelihood
from ddpm_lab.diffusion.edm import edm_sampler_steps

from .gaussian_oracle import MU, STD, EDMOracleNetwork, edm_denoiser

diffusers = pytest.importorskip("diffusers")


def _diffusers_edm(steps: int, sigma_data: float = 0.5):
    scheduler = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=sigma_data, rho=7.0)
    scheduler.set_timesteps(steps)
    return scheduler


def test_preconditioning_and_ramp_match_diffusers():
    """c_in, c_noise, c_skip/c_out (through D) and the rho = 7 ramp equal diffusers' (float32 there: 1e-6 rel)."""
    process = EDMProcess(sigma_data=0.7)
    scheduler = _diffusers_edm(18, sigma_data=0.7)
    torch.testing.assert_close(process.sigmas(18), scheduler.sigmas.double(), rtol=1e-6, atol=0)
    sigma = torch.tensor([0.002, 0.3, 1.0, 17.0, 80.0], dtype=torch.float64)
    c = process.preconditioning(sigma)
    x, output = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    for i, s in enumerate(sigma.tolist()):
        torch.testing.assert_close(x[i] * c["c_in"][i], scheduler.precondition_inputs(x[i], torch.tensor(s)))
        torch.testing.assert_close(c["c_noise"][i], scheduler.precondition_noise(torch.tensor(s, dtype=torch.float64)))
        expected = scheduler.precondition_outputs(x[i], output[i], torch.tensor(s, dtype=torch.float64))
        torch.testing.assert_close(c["c_skip"][i] * x[i] + c["c_out"][i] * output[i], expected)


def test_deterministic_euler_matches_diffusers_step_for_step():
    """EDM Euler (no churn) with the same network equals diffusers' EDMEulerScheduler loop (1e-5: float32)."""
    torch.manual_seed(0)
    process = EDMProcess()
    weight = torch.randn(3, 3) * 0.3

    def network(x_in, label):
        return torch.tanh(x_in @ weight) + 0.01 * label[:, None]

    x_init = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    ours = process.sample(network, (4, 3), sampler="euler", steps=12, generator=torch.Generator().manual_seed(1))
    scheduler = _diffusers_edm(12)
    # EDM starts at N(0, sigma_max^2) (Algorithm 1); diffusers' init_noise_sigma is sqrt(sigma_max^2 + 1).
    x = x_init * scheduler.sigmas[0]
    for t in scheduler.timesteps:
        sigma = scheduler.sigmas[scheduler.step_index or 0]
        label = (process.noise_label_scale * t).expand(4)
        output = network(scheduler.scale_model_input(x, t), label)
        x = scheduler.step(output, t, x).prev_sample
        assert sigma > 0
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)


def test_training_sigmas_are_log_normal():
    """ln sigma of uniform quantiles follows N(P_mean, P_std^2): Kolmogorov-Smirnov p > 0.01 (scipy)."""
    process = EDMProcess(p_mean=-1.2, p_std=1.2)
    u = torch.rand(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    log_sigma = process.training_sigma(u).log().numpy()
    assert stats.kstest(log_sigma, stats.norm(loc=-1.2, scale=1.2).cdf).pvalue > 0.01


def test_loss_is_the_papers_weighted_denoising_error():
    """The loss is lambda(sigma) ||D - y||^2 with lambda = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2, which EDM eq. 8
    and section 5 also write as the unit-weighted ||F - (y - c_skip x) / c_out||^2: both forms, 1e-10."""
    process = EDMProcess(sigma_data=0.5)
    network = torch.nn.Linear(4, 4).double()
    y, noise = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    u = torch.linspace(0.05, 0.95, 6, dtype=torch.float64)
    terms = process.training_losses(lambda x, label: network(x), y, u, noise)
    sigma = process.training_sigma(u)[:, None]
    x = y + sigma * noise
    total = sigma**2 + 0.25
    c_skip, c_out, c_in = 0.25 / total, sigma * 0.5 / total.sqrt(), 1 / total.sqrt()
    with torch.no_grad():
        f = network(c_in * x)
        denoised = c_skip * x + c_out * f
        torch.testing.assert_close(
            terms["loss"], (total / (sigma * 0.5) ** 2 * (denoised - y) ** 2).mean(1), rtol=1e-10, atol=0
        )
        torch.testing.assert_close(terms["loss"], ((f - (y - c_skip * x) / c_out) ** 2).mean(1), rtol=1e-10, atol=0)
        torch.testing.assert_close(terms["mse"], ((denoised - y) ** 2).mean(1))


@pytest.mark.parametrize(
    ("heun", "steps", "churn", "tol"), [(True, 25, 0.0, 0.035), (False, 50, 0.0, 0.08), (True, 50, 10.0, 0.05)]
)
def test_gaussian_oracle_reproduces_the_data(heun, steps, churn, tol):
    """With the exact denoiser of N(mu, diag(s^2)) data, Heun at 25 steps (49 NFE), Euler at 50 and Heun with
    churn at 50 (Algorithm 2, S_churn = 10) give that Gaussian: mean and relative std within 3.5% (Heun), 8%
    (Euler, first order: its std is 0.93 x at 50 steps) and 5% (churn; 7.8% at 25 steps) over 20k samples
    (sampling error ~1%). The tolerance is the discretisation's: Heun's std error is 5% at 18 steps and
    0.2% at 100 on this Gaussian."""
    process = EDMProcess(s_churn=churn)
    sigmas = process.sigmas(steps).tolist()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 2, generator=generator, dtype=torch.float64) * sigmas[0]
    *_, x = edm_sampler_steps(edm_denoiser, x, sigmas, heun, generator=generator, **process.churn)
    torch.testing.assert_close(x.mean(0), MU, atol=tol, rtol=0)
    torch.testing.assert_close(x.std(0), STD, rtol=tol, atol=0)


def test_process_sample_with_the_oracle_network():
    """The whole path (noise label, c_in, c_skip/c_out, sample()) with a network that inverts the preconditioning
    to the exact denoiser: the samples are the data Gaussian (mean 0.05, std 5%, 4k samples, Heun 25 steps), and
    ``log_likelihood`` (exact divergence, 100 steps) is its log-density within 0.05 nats (scipy)."""
    process = EDMProcess()
    x = process.sample(EDMOracleNetwork(process), (4000, 2), steps=25, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.double().mean(0), MU, atol=0.05, rtol=0)
    torch.testing.assert_close(x.double().std(0), STD, rtol=0.05, atol=0)
    assert process.model_evaluations("heun", 18) == 35
    data = torch.randn(16, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * STD + MU
    ours = process.log_likelihood(EDMOracleNetwork(process), data, steps=100)
    cov = torch.diag(STD**2 + 0.002**2).numpy()
    expected = stats.multivariate_normal(MU.numpy(), cov).logpdf(data.numpy())
    torch.testing.assert_close(ours, torch.as_tensor(expected), atol=0.05, rtol=0)


def test_ode_likelihood_of_the_exact_denoiser_is_the_gaussian_log_density():
    """The probability-flow ODE from sigma_min to sigma_max with the exact denoiser and exact divergence gives
    log N(x; mu, s^2 + sigma_min^2) (scipy) within 0.03 nats (Heun, 200 steps); the prior N(0, 80^2) vs the
    true N(mu, s^2 + 80^2) costs < 1e-3."""
    process = EDMProcess()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * STD + MU

    def velocity(x_in, sigma):
        return (x_in - edm_denoiser(x_in, sigma)) / sigma

    grid = process.sigmas(200).flip(0)[1:].tolist()
    ours = ode_log_likelihood(velocity, x, grid, prior_std=80.0)
    cov = torch.diag(STD**2 + 0.002**2).numpy()
    expected = stats.multivariate_normal(MU.numpy(), cov).logpdf(x.numpy())
    torch.testing.assert_close(ours, torch.as_tensor(expected), atol=0.03, rtol=0)


def test_process_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        EDMProcess(sigma_min=1.0, sigma_max=0.5)
    process = EDMProcess()
    with pytest.raises(ValueError, match="s_churn"):
        process.sample(torch.nn.Identity(), (2, 2), steps=4, eta=1.0)
    with pytest.raises(ValueError, match="ddim"):
        process.sample(torch.nn.Identity(), (2, 2), sampler="ddim", steps=4)
    with pytest.raises(ValueError, match="continuous in time"):
        process.sample(torch.nn.Identity(), (2, 2), steps=None)
    with pytest.raises(ValueError, match="uniform"):
        process.make_timestep_sampler("loss_aware")
    assert karras_sigmas(1, 0.002, 80.0).tolist() == [80.0, 0.0]
