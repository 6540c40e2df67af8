import numpy as np
import pytest
import torch

from ddpm_lab.diffusion import GaussianDiffusion, eps_from_x0, make_beta_schedule, v_from_x0_eps, x0_from_eps, x0_from_v


@pytest.fixture
def diffusion():
    return GaussianDiffusion(make_beta_schedule("linear", 100))


@pytest.mark.parametrize("t", [0, 9, 49, 99])
def test_closed_form_q_sample_matches_iterated_steps(diffusion, t):
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n, 1), 3.0)
    steps = torch.zeros(n, dtype=torch.long)
    x = x0
    for s in range(t + 1):
        x = diffusion.q_step(x, steps + s, torch.randn(x.shape, generator=gen))
    closed = diffusion.q_sample(x0, steps + t, torch.randn(x0.shape, generator=gen))
    alpha_bar = diffusion.alphas_cumprod[t].item()
    mean, var = 3.0 * alpha_bar**0.5, 1 - alpha_bar
    se_mean, se_var = (var / n) ** 0.5, var * (2 / n) ** 0.5
    for sample in (x, closed):
        assert abs(sample.mean().item() - mean) < 5 * se_mean
        assert abs(sample.var().item() - var) < 5 * se_var
    # A wrong alpha-bar (off by one step) would already be many standard errors away for t >= 9.
    if t in (9, 49):
        wrong = 3.0 * diffusion.alphas_cumprod[t - 1].item() ** 0.5
        assert abs(x.mean().item() - wrong) > 5 * se_mean


def test_products_of_step_coefficients_give_closed_form(diffusion):
    sqrt_alphas = (1 - diffusion.betas).sqrt()
    assert torch.allclose(torch.cumprod(sqrt_alphas, 0), diffusion.alphas_cumprod.sqrt(), rtol=1e-12)


def test_posterior_is_bayes_rule(diffusion):
    """q(x_{t-1}|x_t,x0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x0): product of two Gaussians in x_{t-1}."""
    x0 = torch.tensor([[-0.8], [0.1], [0.9]], dtype=torch.float64)
    x_t = torch.tensor([[0.5], [-1.2], [2.0]], dtype=torch.float64)
    for step in [1, 5, 50, 99]:
        t = torch.full((3,), step)
        beta = diffusion.betas[step]
        alpha_bar_prev = diffusion.alphas_cumprod[step - 1]
        precision = 1 / (1 - alpha_bar_prev) + (1 - beta) / beta
        var = 1 / precision
        mean = var * (alpha_bar_prev.sqrt() * x0 / (1 - alpha_bar_prev) + (1 - beta).sqrt() * x_t / beta)
        got_mean, got_var, got_log_var = diffusion.q_posterior(x0, x_t, t)
        assert torch.allclose(got_mean, mean, rtol=1e-10)
        assert torch.allclose(got_var, var.expand_as(got_var), rtol=1e-10)
        assert torch.allclose(got_log_var, var.log().expand_as(got_var), rtol=1e-10)
    mean0, var0, _ = diffusion.q_posterior(x0, x_t, torch.zeros(3, dtype=torch.long))
    assert torch.allclose(mean0, x0) and bool((var0 == 0).all()), "x_{-1} is x0 itself"


def test_posterior_marginalises_to_forward_marginal(diffusion):
    """Sampling x_t ~ q(x_t|x0) then x_{t-1} ~ q(x_{t-1}|x_t,x0) must give q(x_{t-1}|x0) (Monte Carlo)."""
    gen = torch.Generator().manual_seed(1)
    n, step = 200_000, 30
    x0 = torch.full((n, 1), -0.4)
    t = torch.full((n,), step)
    x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
    mean, var, _ = diffusion.q_posterior(x0, x_t, t)
    x_prev = mean + var.sqrt() * torch.randn(x0.shape, generator=gen)
    alpha_bar_prev = diffusion.alphas_cumprod[step - 1].item()
    assert x_prev.mean().item() == pytest.approx(-0.4 * alpha_bar_prev**0.5, abs=0.01)
    assert x_prev.var().item() == pytest.approx(1 - alpha_bar_prev, rel=0.02)


def test_parameterisation_conversions_round_trip(diffusion):
    gen = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 8, 3, 4, 4, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, 10, 50, 70, 80, 90, 95, 99])
    alpha_bar = diffusion.coef("alphas_cumprod", t, x0)
    x_t = diffusion.q_sample(x0, t, eps)
    assert torch.allclose(x0_from_eps(x_t, eps, alpha_bar), x0, atol=1e-9)
    assert torch.allclose(eps_from_x0(x_t, x0, alpha_bar), eps, atol=1e-9)
    v = v_from_x0_eps(x0, eps, alpha_bar)
    assert torch.allclose(x0_from_v(x_t, v, alpha_bar), x0, atol=1e-9)
    # v is a rotation of (x0, eps): its norm per element is that of the pair.
    assert torch.allclose(v**2 + x_t**2, x0**2 + eps**2, atol=1e-9)


def test_learned_range_endpoints_are_the_fixed_variances():
    betas = make_beta_schedule("cosine", 50)
    learned = GaussianDiffusion(betas, var_type="learned_range", loss_type="hybrid")
    small = GaussianDiffusion(betas, var_type="fixed_small")
    large = GaussianDiffusion(betas, var_type="fixed_large")
    x_t = torch.randn(50, 2, 3, 3, dtype=torch.float64)
    t = torch.arange(50)
    mean_part = torch.randn_like(x_t)
    for value, fixed in [(-1.0, small), (1.0, large)]:
        out = learned.p_mean_variance(torch.cat([mean_part, torch.full_like(x_t, value)], 1), x_t, t)
        ref = fixed.p_mean_variance(mean_part, x_t, t)
        # IDDPM's learned range tops out at log beta_t for every t; fixed_large differs only at t = 0.
        assert torch.allclose(out["log_variance"][1:], ref["log_variance"][1:], rtol=1e-10)
        assert torch.allclose(out["mean"], ref["mean"], rtol=1e-10)
    assert not torch.allclose(small.tables["posterior_log_variance_clipped"], large.tables["log_betas"])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_fixed_large_variance_at_t0_is_beta_tilde_1_as_in_ddpm(schedule):
    """DDPM/IDDPM: sigma^2 = [beta-tilde_1, beta_1, ..., beta_{T-1}] (0-based t). With beta_0 at t = 0 the
    decoder term, and so val/nll_bpd with fixed_large, was not comparable with the papers' bits/dim."""
    betas = make_beta_schedule(schedule, 100).numpy()
    abar = np.cumprod(1.0 - betas)
    beta_tilde_1 = betas[1] * (1.0 - abar[0]) / (1.0 - abar[1])
    expected = np.concatenate([[beta_tilde_1], betas[1:]])
    large = GaussianDiffusion(torch.as_tensor(betas), var_type="fixed_large")
    x_t = torch.zeros(100, 1, dtype=torch.float64)
    out = large.p_mean_variance(torch.zeros_like(x_t), x_t, torch.arange(100))
    np.testing.assert_allclose(out["variance"][:, 0].numpy(), expected, rtol=1e-12)
    assert abs(out["variance"][0, 0] - betas[0]) > 0.1 * betas[0]  # not beta_0
