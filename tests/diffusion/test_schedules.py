import math

import pytest
import torch

from ddpm_lab.diffusion import BETA_SCHEDULES, make_beta_schedule


@pytest.mark.parametrize("name", sorted(BETA_SCHEDULES))
@pytest.mark.parametrize("num_timesteps", [10, 1000, 4000])
def test_schedule_is_a_valid_noise_chain(name, num_timesteps):
    betas = make_beta_schedule(name, num_timesteps)
    assert betas.shape == (num_timesteps,)
    assert betas.dtype == torch.float64
    assert bool(((betas > 0) & (betas < 1)).all())
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert bool((alpha_bar[1:] < alpha_bar[:-1]).all()), "alpha-bar must strictly decrease"


def test_linear_endpoints_match_ho_et_al_and_scale_with_t():
    betas = make_beta_schedule("linear", 1000)
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(0.02)
    # At T=1000 the linear chain ends with alpha-bar_T ~ 4.04e-5 (Ho et al.'s prior KL is ~1e-5 bits/dim).
    assert torch.prod(1 - betas).item() == pytest.approx(4.0358e-5, rel=1e-3)
    half = make_beta_schedule("linear", 500)
    assert half[0].item() == pytest.approx(2e-4) and half[-1].item() == pytest.approx(0.04)


def test_cosine_matches_nichol_dhariwal_closed_form():
    s, T = 0.008, 1000
    betas = make_beta_schedule("cosine", T)

    def f(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    alpha_bar = torch.cumprod(1 - betas, 0)
    for t in [0, 1, 250, 500, 900]:
        assert alpha_bar[t].item() == pytest.approx(f((t + 1) / T) / f(0), rel=1e-9)
    assert betas[0].item() == pytest.approx(1 - f(1 / T) / f(0), rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.999), "the last beta is clipped at 0.999"


def test_constant_schedule_reaches_linear_alpha_bar():
    constant = make_beta_schedule("constant", 1000)
    assert torch.allclose(constant, constant[0].expand(1000))
    assert torch.prod(1 - constant).item() == pytest.approx(torch.prod(1 - make_beta_schedule("linear", 1000)).item())


def test_unknown_schedule_lists_the_names():
    with pytest.raises(ValueError, match=r"Unknown beta schedule 'cosin'.*constant, cosine, linear"):
        make_beta_schedule("cosin", 1000)


@pytest.mark.parametrize("bad", [0, 1, -5, 2.5, True])
def test_bad_number_of_timesteps(bad):
    with pytest.raises(ValueError, match="it must be an integer >= 2"):
        make_beta_schedule("linear", bad)


def test_schedules_are_distinct():
    tables = {name: make_beta_schedule(name, 100) for name in BETA_SCHEDULES}
    names = sorted(tables)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(tables[a], tables[b]), f"{a} and {b} are the same schedule"
