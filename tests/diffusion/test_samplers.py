"""Samplers driven by the exact optimal denoiser of Gaussian data must reproduce that Gaussian.

For x0 ~ N(mu, s^2) (per dimension) and x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, the posterior means are
  E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar)
  E[x0 | x_t]  = mu + sqrt(abar) s^2 (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar)
"""

import pytest
import torch

from ddpm_lab.diffusion import GaussianDiffusion, make_beta_schedule, v_from_x0_eps

MU, STD = 0.3, 0.5
N = 20_000


def optimal_denoiser(diffusion: GaussianDiffusion, mean_type: str):
    def model(x_t, t):
        alpha_bar = diffusion.coef("alphas_cumprod", t, x_t)
        centred = x_t - alpha_bar.sqrt() * MU
        denom = alpha_bar * STD**2 + 1 - alpha_bar
        eps = (1 - alpha_bar).sqrt() * centred / denom
        x0 = MU + alpha_bar.sqrt() * STD**2 * centred / denom
        return {"eps": eps, "x0": x0, "v": v_from_x0_eps(x0, eps, alpha_bar)}[mean_type]

    return model


def predicted_moments(alpha_bar: list[float], sampler: str, eta: float, variance: str) -> tuple[float, float]:
    """Mean and std that a sampler over the kept alpha-bars (ascending) must produce with the optimal denoiser.

    Every step is linear-Gaussian: x' = A x0hat + B x_t + sigma z with x0hat = MU + G (x_t - sqrt(a) MU).
    For the centred y = x - sqrt(a) MU this gives y' = (A G + B) y + sigma z (the MU terms cancel for both
    samplers), so the moments follow from the schedule alone, independently of the library's code.
    """
    mean_y, var_y = -(alpha_bar[-1] ** 0.5) * MU, 1.0  # x_T ~ N(0, 1)
    for i in reversed(range(len(alpha_bar))):
        a, a_prev = alpha_bar[i], (alpha_bar[i - 1] if i > 0 else 1.0)
        v = a * STD**2 + 1 - a
        gain = a**0.5 * STD**2 / v
        beta = 1 - a / a_prev
        if sampler == "ddpm":
            A, B = beta * a_prev**0.5 / (1 - a), (1 - a_prev) * (1 - beta) ** 0.5 / (1 - a)
            posterior = beta * (1 - a_prev) / (1 - a)
            sigma2 = (
                {"fixed_small": posterior, "fixed_large": beta, "exact": posterior + A**2 * STD**2 * (1 - a) / v}[
                    variance
                ]
                if i > 0
                else 0.0
            )
        else:
            sigma2 = eta**2 * (1 - a_prev) / (1 - a) * (1 - a / a_prev)
            c = (1 - a_prev - sigma2) ** 0.5
            A, B = a_prev**0.5 - c * a**0.5 / (1 - a) ** 0.5, c / (1 - a) ** 0.5
        k = A * gain + B
        mean_y, var_y = k * mean_y, k**2 * var_y + sigma2
    return MU + mean_y, var_y**0.5


def exact_variance_denoiser(diffusion: GaussianDiffusion, chain: GaussianDiffusion):
    """Optimal eps plus the exact reverse log-variance (var_type="learned"): for Gaussian data the true
    q(x_{t-1} | x_t) is Gaussian with variance beta-tilde + coef1^2 Var[x0 | x_t]."""
    eps_model = optimal_denoiser(diffusion, "eps")

    def model(x_t, t):
        index = torch.searchsorted(chain.timestep_map, t)
        alpha_bar = chain.coef("alphas_cumprod", index, x_t)
        var_x0 = STD**2 * (1 - alpha_bar) / (alpha_bar * STD**2 + 1 - alpha_bar)
        posterior = chain.coef("posterior_log_variance_clipped", index, x_t).exp()
        log_var = torch.log(posterior + chain.coef("posterior_mean_coef1", index, x_t) ** 2 * var_x0)
        return torch.cat([eps_model(x_t, t), log_var.expand_as(x_t)], dim=1)

    return model


CASES = [  # sampler, steps, eta, var_type, mean_type; "exact" = learned variance given its optimal value
    ("ddpm", None, 0.0, "fixed_small", "eps"),
    ("ddpm", None, 0.0, "fixed_large", "x0"),
    ("ddpm", 100, 0.0, "fixed_small", "v"),
    ("ddpm", 10, 0.0, "exact", "eps"),
    ("ddpm", 50, 0.0, "exact", "eps"),
    ("ddim", 50, 0.0, "fixed_small", "eps"),
    ("ddim", 500, 0.0, "fixed_small", "v"),
    ("ddim", 50, 1.0, "fixed_small", "eps"),
    ("ddim", 1000, 1.0, "fixed_large", "x0"),
]


@pytest.mark.parametrize(("sampler", "steps", "eta", "variance", "mean_type"), CASES)
def test_sampler_matches_closed_form_moments(sampler, steps, eta, variance, mean_type):
    var_type = "learned" if variance == "exact" else variance
    base = GaussianDiffusion(
        make_beta_schedule("linear", 1000),
        mean_type=mean_type,
        var_type=var_type,
        loss_type="hybrid" if variance == "exact" else "mse",
    )
    chain = base.respaced(steps or 1000)
    model = exact_variance_denoiser(base, chain) if variance == "exact" else optimal_denoiser(base, mean_type)
    samples = base.sample(
        model,
        (N, 1),
        sampler=sampler,
        steps=steps,
        eta=eta,
        generator=torch.Generator().manual_seed(0),
        clip_denoised=False,
    )
    mean, std = predicted_moments(chain.alphas_cumprod.tolist(), sampler, eta, variance)
    # Monte Carlo standard errors: 0.0035 for the mean, 0.0025 for the std.
    assert samples.mean().item() == pytest.approx(mean, abs=0.015)
    assert samples.std().item() == pytest.approx(std, abs=0.01)


@pytest.mark.parametrize(("sampler", "steps", "eta", "variance", "mean_type"), CASES)
def test_enough_steps_reproduce_the_gaussian(sampler, steps, eta, variance, mean_type):
    """Where theory says the chain is exact or fine enough, the samples' law is N(MU, STD^2) itself."""
    chain = GaussianDiffusion(make_beta_schedule("linear", 1000)).respaced(steps or 1000)
    mean, std = predicted_moments(chain.alphas_cumprod.tolist(), sampler, eta, variance)
    if variance == "exact" or (steps or 1000) >= 500:
        assert mean == pytest.approx(MU, abs=0.01) and std == pytest.approx(STD, rel=0.01)
    else:  # coarse chains with a fixed variance under-disperse (DDIM: Cauchy-Schwarz on each step's gain)
        assert std < STD


def test_wrong_denoiser_is_detected():
    """The same check fails for a denoiser of the wrong Gaussian (the test can fail)."""
    diffusion = GaussianDiffusion(make_beta_schedule("linear", 1000), var_type="fixed_small")

    def wrong(x_t, t):  # optimal for N(0, 1) data, not N(0.3, 0.5^2)
        return (1 - diffusion.coef("alphas_cumprod", t, x_t)).sqrt() * x_t

    samples = diffusion.sample(
        wrong, (N, 1), sampler="ddim", steps=50, generator=torch.Generator().manual_seed(0), clip_denoised=False
    )
    assert abs(samples.std().item() - STD) > 0.3


def test_sampling_is_reproducible_with_a_generator_and_records_a_trajectory():
    diffusion = GaussianDiffusion(make_beta_schedule("cosine", 100))
    model = optimal_denoiser(diffusion, "eps")
    a = diffusion.sample(model, (4, 1, 2, 2), steps=10, generator=torch.Generator().manual_seed(3))
    b, traj = diffusion.sample(
        model, (4, 1, 2, 2), steps=10, generator=torch.Generator().manual_seed(3), return_trajectory=True
    )
    assert torch.equal(a, b)
    assert traj.noise_levels[0] == 100 and traj.noise_levels[-1] == 0
    assert traj.noise_levels == sorted(traj.noise_levels, reverse=True)
    assert traj.states.shape == (len(traj.noise_levels), 4, 1, 2, 2)
    assert torch.equal(traj.states[-1], b)


def test_respaced_chain_keeps_the_marginals():
    diffusion = GaussianDiffusion(make_beta_schedule("linear", 1000))
    short = diffusion.respaced(10)
    kept = short.timestep_map
    assert kept[0].item() == 0 and kept[-1].item() == 999
    assert torch.allclose(short.alphas_cumprod, diffusion.alphas_cumprod[kept], rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": "rk45"}, "Unknown sampler 'rk45'"),
        ({"spacing": "leading"}, "Unknown timestep spacing 'leading'"),
        ({"sampler": "dpmpp_2m", "steps": 0}, "steps must be an integer"),
        ({"steps": 0}, "steps must be an integer"),
        ({"steps": 2000}, "steps must be an integer"),
        ({"sampler": "ddim", "eta": -1.0}, "eta must be >= 0"),
    ],
)
def test_bad_sampling_arguments(kwargs, message):
    diffusion = GaussianDiffusion(make_beta_schedule("linear", 1000))
    calls = []

    def model(x, t):
        calls.append(1)
        return x

    with pytest.raises(ValueError, match=message):
        diffusion.sample(model, (2, 1), **kwargs)
    assert not calls, "arguments must be checked before the first network call"


def test_default_sampling_does_not_squeeze_data_outside_the_unit_interval():
    """Standardised (non-image) data reaches |x| > 1. The core API clipped predicted x0 to [-1, 1] by default,
    which squeezed such samples into the unit square; now only image callers (DiffusionModule) clip."""
    std = 2.0
    diffusion = GaussianDiffusion(make_beta_schedule("linear", 200))

    def model(x_t, t):  # the optimal eps predictor for x0 ~ N(0, std^2)
        alpha_bar = diffusion.coef("alphas_cumprod", t, x_t)
        return (1 - alpha_bar).sqrt() * x_t / (alpha_bar * std**2 + 1 - alpha_bar)

    def draw(**kwargs):
        return diffusion.sample(
            model, (N, 1), sampler="ddpm", steps=50, generator=torch.Generator().manual_seed(0), **kwargs
        )

    assert abs(draw().std().item() - std) < 0.05 * std
    assert draw(clip_denoised=True).std().item() < 1.5  # what the old default gave: not the data


def test_sampling_steps_copy_no_table_to_the_device(monkeypatch):
    """The respaced timestep map went to the device on every model_timesteps call, and DDIM's int t_prev
    through torch.as_tensor: a host-device copy (and sync) per step. Both are now cached or filled on device."""
    diffusion = GaussianDiffusion(make_beta_schedule("linear", 100))
    model = optimal_denoiser(diffusion, "eps")
    copies = []
    to, as_tensor = torch.Tensor.to, torch.as_tensor
    timestep_maps = {id(diffusion.timestep_map), id(diffusion.respaced(10).timestep_map)}

    def counting_to(tensor, *args, **kwargs):
        if id(tensor) in timestep_maps:
            copies.append("timestep_map.to")
        return to(tensor, *args, **kwargs)

    def counting_as_tensor(data, *args, **kwargs):
        if kwargs.get("device") is not None:
            copies.append("as_tensor(device=...)")
        return as_tensor(data, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    monkeypatch.setattr(torch, "as_tensor", counting_as_tensor)
    for sampler in ("ddpm", "ddim"):
        diffusion.sample(model, (4, 1), sampler=sampler, steps=10, generator=torch.Generator().manual_seed(0))
    assert len(copies) <= 2, copies  # at most the first copy of each chain's map


def test_eta_follows_the_sampler_when_only_the_sampler_is_overridden():
    """A DDIM run's eta=0 does not turn `sampler=euler_ancestral` into plain Euler: a sampler given without an
    eta gets its own default (k-diffusion's 1 for euler_ancestral); an explicit eta always wins."""
    from ddpm_lab.diffusion import resolve_sampling

    run = {"sampler": "ddim", "steps": 100, "eta": 0.0, "spacing": "uniform"}
    assert resolve_sampling(run, {"sampler": "euler_ancestral", "eta": None})["eta"] == 1.0
    assert resolve_sampling(run, {"sampler": "euler_ancestral", "eta": 0.5})["eta"] == 0.5
    assert resolve_sampling(run, {"steps": 10})["eta"] == 0.0  # same sampler: the run's eta stands
    assert resolve_sampling({**run, "eta": 0.3}, {"sampler": "ddim"})["eta"] == 0.3
    assert resolve_sampling({**run, "eta": None}, {})["eta"] == 0.0
