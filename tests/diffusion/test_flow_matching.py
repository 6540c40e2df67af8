"""Flow matching against facebookresearch's ``flow_matching`` package (an implementation we did not write; its
convention is t = 0 noise, t = 1 data, so its t is our 1 - t and its velocity our -v), scipy and closed forms:
the path and target, Euler/midpoint/Heun sampling (torchdiffeq's fixed-grid solvers under its ODESolver), the
logit-normal time law, the exact-divergence likelihood and the Gaussian oracle."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from ddpm_lab.diffusion import FlowMatchingProcess, ode_log_likelihood
from ddpm_lab.diffusion.flow_matching import flow_ode_steps

from .gaussian_oracle import MU, STD, FlowOracleNetwork, flow_velocity

fm_path = pytest.importorskip("flow_matching.path")
fm_solver = pytest.importorskip("flow_matching.solver")
from flow_matching.path.scheduler import CondOTScheduler  # noqa: E402


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()

    class Velocity(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x, label):
            inputs = torch.cat([x.double(), label[:, None].double() / 1000.0], dim=1)
            return self.net(inputs).to(x.dtype)

    return Velocity()


def test_path_and_target_match_flow_matching():
    """x_t and the velocity target equal AffineProbPath(CondOTScheduler) at t' = 1 - t (exact to 1e-12)."""
    x0, noise = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    t = torch.rand(8, dtype=torch.float64)
    theirs = fm_path.AffineProbPath(scheduler=CondOTScheduler()).sample(x_0=noise, x_1=x0, t=1.0 - t)
    torch.testing.assert_close(FlowMatchingProcess().interpolate(x0, noise, t), theirs.x_t, rtol=0, atol=1e-12)
    network = _network()
    terms = FlowMatchingProcess(time_sampling="uniform").training_losses(network, x0, t, noise)
    with torch.no_grad():
        prediction = network(theirs.x_t, (1000.0 * t).float())  # the process sends a float32 time label
    torch.testing.assert_close(terms["loss"], ((prediction + theirs.dx_t) ** 2).mean(1), rtol=1e-10, atol=0)


@pytest.mark.parametrize(("sampler", "method"), [("euler", "euler"), ("midpoint", "midpoint"), ("heun", "heun2")])
def test_samplers_match_flow_matching_ode_solver(sampler, method):
    """Our Euler/midpoint/Heun from t = 1 to 0 in 8 steps equal flow_matching's ODESolver (torchdiffeq ``method``)
    from its t = 0 to 1 on the same grid with the sign-flipped velocity (1e-10, float64)."""
    process, network = FlowMatchingProcess(), _network()
    ours = process.sample(network, (5, 2), sampler=sampler, steps=8, generator=torch.Generator().manual_seed(2))
    x_init = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))

    def velocity_theirs(x, t):
        return -network(x, 1000.0 * (1.0 - t).expand(x.shape[0]))

    solver = fm_solver.ODESolver(velocity_model=velocity_theirs)
    theirs = solver.sample(
        x_init=x_init.double(), method=method, step_size=None, time_grid=torch.linspace(0, 1, 9, dtype=torch.float64)
    )
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-6, atol=1e-6)
    assert process.model_evaluations(sampler, 8) == (8 if sampler == "euler" else 16)


def test_likelihood_matches_flow_matching_compute_likelihood():
    """Our exact-divergence ODE log-likelihood (Heun, 20 steps, t = 0 to 1) equals flow_matching's
    compute_likelihood with torchdiffeq's heun2 on the same grid (1e-8 nats)."""
    process, network = FlowMatchingProcess(), _network()
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def velocity_ours(x_in, t):
        return process.velocity(network, x_in, torch.full((x_in.shape[0],), t, dtype=torch.float64))

    ours = ode_log_likelihood(velocity_ours, x, torch.linspace(0, 1, 21, dtype=torch.float64).tolist())
    solver = fm_solver.ODESolver(velocity_model=lambda x, t: -network(x, 1000.0 * (1.0 - t).expand(x.shape[0])))
    normal = torch.distributions.Normal(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    _, theirs = solver.compute_likelihood(
        x_1=x,
        log_p0=lambda z: normal.log_prob(z).sum(1),
        method="heun2",
        step_size=None,
        time_grid=torch.linspace(1, 0, 21, dtype=torch.float64),
        exact_divergence=True,
    )
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-8)


def test_time_laws():
    """logit(t) ~ N(m, s^2) for logit_normal and t ~ U[0, 1] for uniform: Kolmogorov-Smirnov p > 0.01 (scipy)."""
    u = torch.rand(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = FlowMatchingProcess(logit_mean=0.3, logit_std=0.8).training_time(u).numpy()
    assert stats.kstest(stats.logistic.ppf(t), stats.norm(0.3, 0.8).cdf).pvalue > 0.01
    t = FlowMatchingProcess(time_sampling="uniform").training_time(u).numpy()
    assert stats.kstest(t, stats.uniform().cdf).pvalue > 0.01


@pytest.mark.parametrize(("method", "steps", "tol"), [("euler", 50, 0.03), ("midpoint", 10, 0.02), ("heun", 10, 0.02)])
def test_gaussian_oracle_reproduces_the_data(method, steps, tol):
    """With the exact velocity of N(mu, diag(s^2)) data, Euler at 50 NFE and midpoint/Heun at 20 NFE reproduce
    that Gaussian: mean within ``tol`` and std within ``tol`` relative over 20k samples (sampling error ~1%)."""
    x = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    *_, x = flow_ode_steps(flow_velocity, x, torch.linspace(1, 0, steps + 1, dtype=torch.float64).tolist(), method)
    torch.testing.assert_close(x.mean(0), MU, atol=tol, rtol=0)
    torch.testing.assert_close(x.std(0), STD, rtol=tol, atol=0)


def test_process_sample_and_likelihood_with_the_oracle_network():
    """Through sample() (time label 1000 t) and nll's ODE: the oracle network's samples are the data Gaussian
    (Heun 10 steps, 4k samples: mean 0.05, std 5%) and its log-likelihood is log N(x; mu, s^2) (0.01 nats)."""
    process = FlowMatchingProcess()
    network = FlowOracleNetwork(process)
    x = process.sample(network, (4000, 2), sampler="heun", steps=10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.double().mean(0), MU, atol=0.05, rtol=0)
    torch.testing.assert_close(x.double().std(0), STD, rtol=0.05, atol=0)
    data = torch.randn(32, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * STD + MU

    ours = process.log_likelihood(network, data, steps=100)
    expected = stats.multivariate_normal(MU.numpy(), torch.diag(STD**2).numpy()).logpdf(data.numpy())
    torch.testing.assert_close(ours, torch.as_tensor(expected), atol=0.01, rtol=0)


def test_process_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="time_sampling"):
        FlowMatchingProcess(time_sampling="beta")
    process = FlowMatchingProcess()
    with pytest.raises(ValueError, match="deterministic"):
        process.sample(torch.nn.Identity(), (2, 2), steps=4, eta=0.5)
    with pytest.raises(ValueError, match="ddpm"):
        process.sample(torch.nn.Identity(), (2, 2), sampler="ddpm", steps=4)
    with pytest.raises(ValueError, match="continuous in time"):
        process.sample(torch.nn.Identity(), (2, 2), steps=None)
