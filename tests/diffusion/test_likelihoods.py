import math

import pytest
import torch

from ddpm_lab.diffusion import GaussianDiffusion, discretized_gaussian_log_likelihood, make_beta_schedule, normal_kl


def phi(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_normal_kl_hand_values():
    t = torch.tensor
    assert normal_kl(t(0.0), t(0.0), t(0.0), t(0.0)).item() == 0
    assert normal_kl(t(1.0), t(0.0), t(0.0), t(0.0)).item() == pytest.approx(0.5)
    # KL(N(0,1) || N(0,4)) = 0.5 (log 4 - 1 + 1/4)
    assert normal_kl(t(0.0), t(0.0), t(0.0), t(math.log(4.0))).item() == pytest.approx(0.5 * (math.log(4) - 0.75))
    # KL(N(2, 0.25) || N(-1, 9)) = log(3/0.5) + (0.25 + 9) / 18 - 0.5
    got = normal_kl(t(2.0), t(math.log(0.25)), t(-1.0), t(math.log(9.0))).item()
    assert got == pytest.approx(math.log(6) + 9.25 / 18 - 0.5)


def test_discretized_gaussian_hand_values():
    w, sigma = 1 / 255, 0.05
    log_scale = torch.tensor(math.log(sigma), dtype=torch.float64)

    def prob(x, mean):
        return (
            discretized_gaussian_log_likelihood(
                torch.tensor(x, dtype=torch.float64), torch.tensor(mean, dtype=torch.float64), log_scale
            )
            .exp()
            .item()
        )

    assert prob(0.0, 0.1) == pytest.approx(phi((0 - 0.1 + w) / sigma) - phi((0 - 0.1 - w) / sigma), rel=1e-9)
    # The edge bins reach to -inf / +inf.
    assert prob(-1.0, -0.95) == pytest.approx(phi((-1 + 0.95 + w) / sigma), rel=1e-9)
    assert prob(1.0, 0.97) == pytest.approx(1 - phi((1 - 0.97 - w) / sigma), rel=1e-9)


@pytest.mark.parametrize(("mean", "log_scale"), [(0.0, -1.0), (0.93, -4.0), (-0.2, 1.0), (0.5, -7.0), (2.0, -3.0)])
def test_discretized_gaussian_sums_to_one(mean, log_scale):
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)
    probs = discretized_gaussian_log_likelihood(bins, torch.tensor(mean), torch.tensor(log_scale)).exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_gaussian_is_finite_in_far_tails():
    x = torch.tensor([0.5], dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(x, torch.tensor([-0.9]), torch.tensor([-6.0]))
    assert torch.isfinite(logp).all() and logp.item() < -1000


def test_nll_bound_with_oracle_denoiser_is_prior_plus_decoder():
    """A network that knows x0 predicts the true eps, so every KL term vanishes for fixed_small and the bound
    is L_T plus the decoder NLL of a Gaussian centred on x0 with variance beta-tilde_1."""
    betas = make_beta_schedule("linear", 50)
    diffusion = GaussianDiffusion(betas, var_type="fixed_small")
    x0 = (torch.randint(1, 255, (3, 1, 2, 2)).double() / 127.5) - 1  # interior bins only

    def oracle(x_t, t):
        alpha_bar = diffusion.coef("alphas_cumprod", t, x_t)
        return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()

    terms = diffusion.nll_bits_per_dim(oracle, x0, generator=torch.Generator().manual_seed(0), return_terms=True)
    assert terms["vb_terms"][:, 1:].abs().max().item() < 1e-8
    sigma = math.exp(0.5 * diffusion.tables["posterior_log_variance_clipped"][0].item())
    decoder_bits = -math.log2(2 * phi((1 / 255) / sigma) - 1)
    alpha_bar_T = diffusion.alphas_cumprod[-1].item()
    prior = 0.5 * (-1 - math.log(1 - alpha_bar_T) + (1 - alpha_bar_T) + alpha_bar_T * (x0**2)) / math.log(2)
    expected = prior.mean(dim=(1, 2, 3)) + decoder_bits
    assert torch.allclose(terms["total_bpd"], expected, rtol=1e-6)
    assert torch.allclose(
        diffusion.nll_bits_per_dim(oracle, x0, generator=torch.Generator().manual_seed(0)), terms["total_bpd"]
    )
