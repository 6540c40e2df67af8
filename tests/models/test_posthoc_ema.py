"""Post-hoc EMA: the power-function EMA against its closed-form weights, and EMAs rebuilt from snapshots
against EMAs tracked during the same run (classic and power-function)."""

import numpy as np
import pytest
import torch
from torch import nn

from ddpm_lab.models.ema import EMA
from ddpm_lab.models.posthoc_ema import (
    PowerEMA,
    exponential_cumulative,
    grid,
    power_cumulative,
    reconstruct,
    save_snapshot,
    sigma_rel_to_gamma,
)


def test_gamma_of_edm2s_two_profiles():
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for sigma in (0.03, 0.2):
        g = sigma_rel_to_gamma(sigma)
        assert np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))) == pytest.approx(sigma)
    with pytest.raises(ValueError, match="sigma_rel"):
        sigma_rel_to_gamma(0.5)


def scalar_network():
    net = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(net.weight)
    return net


def trajectory(steps, dim=64, seed=0):
    """Weights after each of ``steps`` optimizer steps: a noisy drift, like SGD's."""
    g = torch.Generator().manual_seed(seed)
    drift = torch.linspace(0, 3, steps + 1)[:, None] * torch.randn(1, dim, generator=g)
    return drift + 0.3 * torch.randn(steps + 1, dim, generator=g).cumsum(0) / np.sqrt(steps)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.15])
def test_power_ema_has_its_closed_form_weights(sigma_rel):
    gamma, steps = sigma_rel_to_gamma(sigma_rel), 50
    net, values = scalar_network(), torch.randn(steps + 1, dtype=torch.float64).float()
    ema = PowerEMA(net, gamma)
    for t in range(1, steps + 1):
        net.weight.data.fill_(values[t])
        ema.update(net, t)
    weights = np.diff(power_cumulative(grid(steps), steps, gamma))  # step tau: (tau^(g+1) - (tau-1)^(g+1)) / t^(g+1)
    assert float(ema.module.weight) == pytest.approx(float(weights @ values[1:].double().numpy()), rel=1e-5)


def test_classic_ema_profile_matches_models_ema():
    steps, net = 60, scalar_network()
    values = torch.randn(steps + 1)
    net.weight.data.fill_(values[0])
    ema = EMA(net, decay=0.9, warmup=True)
    for t in range(1, steps + 1):
        net.weight.data.fill_(values[t])
        ema.update(net)
    cumulative = exponential_cumulative(grid(steps), steps, 0.9, warmup=True)
    expected = cumulative[0] * values[0] + np.diff(cumulative) @ values[1:].double().numpy()
    assert float(ema.module.weight) == pytest.approx(float(expected), rel=1e-5)


class Vector(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(dim))


def train_with_snapshots(tmp_path, steps=400, every=20, extra_sigma=0.07, decay=0.98):
    """Run ``steps`` steps of a weight trajectory; snapshot sigma_rel 0.05 and 0.10 every ``every`` steps,
    and track a classic EMA and a power EMA of ``extra_sigma`` alongside, as references."""
    path = trajectory(steps)
    net = Vector(path.shape[1])
    net.theta.data.copy_(path[0])
    stored = [PowerEMA(net, sigma_rel_to_gamma(s)) for s in (0.05, 0.10)]
    extra, classic = PowerEMA(net, sigma_rel_to_gamma(extra_sigma)), EMA(net, decay=decay, warmup=True)
    for t in range(1, steps + 1):
        net.theta.data.copy_(path[t])
        for ema in (*stored, extra):
            ema.update(net, t)
        classic.update(net)
        if t % every == 0:
            save_snapshot(tmp_path, t, stored)
    return net.theta.detach(), stored, extra.module.theta, classic.module.theta


def relative_error(rebuilt, tracked, raw):
    return float((rebuilt - tracked).norm() / (tracked - raw).norm())


def test_a_stored_profile_is_rebuilt_exactly(tmp_path):
    raw, stored, _, _ = train_with_snapshots(tmp_path)
    rebuilt = reconstruct(tmp_path, 400, sigma_rel=0.10)
    assert rebuilt.snapshots == 20 and rebuilt.profile_error < 1e-6
    assert relative_error(rebuilt.state_dict["theta"], stored[1].module.theta, raw) < 1e-4


def test_a_classic_ema_is_rebuilt_from_power_snapshots(tmp_path):
    """The reconstruction of a standard EMA equals the one tracked during the same run (to within the
    distance between the profiles' weights, which the profile error bounds)."""
    raw, _, _, classic = train_with_snapshots(tmp_path)
    rebuilt = reconstruct(tmp_path, 400, decay=0.98, warmup=True)
    assert relative_error(rebuilt.state_dict["theta"], classic, raw) < 0.01  # 1e-4 measured
    assert rebuilt.profile_error < 0.1


def test_an_untracked_length_is_rebuilt_from_the_two_stored_ones(tmp_path):
    raw, stored, extra, _ = train_with_snapshots(tmp_path)
    rebuilt = reconstruct(tmp_path, 400, sigma_rel=0.07)
    error = relative_error(rebuilt.state_dict["theta"], extra, raw)
    assert error < 0.01, error  # 3e-4 measured
    # and far closer than either stored EMA is to it
    assert error < 0.2 * min(relative_error(s.module.theta, extra, raw) for s in stored)


def test_reconstruction_uses_only_snapshots_up_to_the_step_and_says_when_there_are_none(tmp_path):
    train_with_snapshots(tmp_path, steps=100, every=20)
    assert reconstruct(tmp_path, 60, sigma_rel=0.1).snapshots == 3
    with pytest.raises(FileNotFoundError, match="snapshot_every"):
        reconstruct(tmp_path, 10, sigma_rel=0.1)
    with pytest.raises(ValueError, match="exactly one target"):
        reconstruct(tmp_path, 100)
