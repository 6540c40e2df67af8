"""Exact denoisers of Gaussian data x0 ~ N(mu, diag(s^2)): the closed forms the samplers of every objective are
checked against (a sampler run with the exact denoiser must reproduce the Gaussian)."""

from __future__ import annotations

import torch

MU = torch.tensor([0.7, -0.4], dtype=torch.float64)
STD = torch.tensor([0.5, 1.3], dtype=torch.float64)


def edm_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x0 | x0 + sigma n = x] = mu + s^2 / (s^2 + sigma^2) (x - mu)."""
    mu, var = MU.to(x), STD.to(x) ** 2
    return mu + var / (var + sigma**2) * (x - mu)


def flow_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """E[eps - x0 | (1 - t) x0 + t eps = x] = (x - E[x0 | x]) / t, with E[x0 | x] from the Gaussian posterior;
    at t = 0, x = x0 and eps is independent of it: E[eps] - x = -x."""
    mu, var = MU.to(x), STD.to(x) ** 2
    if t == 0:
        return -x  # eps independent of x0: E[eps] = 0
    x0_mean = mu + (1 - t) * var / ((1 - t) ** 2 * var + t**2) * (x - (1 - t) * mu)
    return (x - x0_mean) / t


class EDMOracleNetwork(torch.nn.Module):
    """The network F that makes an ``EDMProcess``'s preconditioned D(x; sigma) the exact denoiser: it reads
    sigma back from its noise label and x from its scaled input."""

    def __init__(self, process) -> None:
        super().__init__()
        self.process = process

    def forward(self, x_in: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        sigma = torch.exp(4.0 * label.double() / self.process.noise_label_scale)
        c = self.process.preconditioning(sigma)
        x = x_in.double() / c["c_in"][:, None]
        exact = torch.stack([edm_denoiser(row[None], float(s))[0] for row, s in zip(x, sigma, strict=True)])
        return ((exact - c["c_skip"][:, None] * x) / c["c_out"][:, None]).to(x_in.dtype)


class FlowOracleNetwork(torch.nn.Module):
    """The velocity network of a ``FlowMatchingProcess`` that is the exact velocity (t read from 1000 t)."""

    def __init__(self, process) -> None:
        super().__init__()
        self.process = process

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        times = (label.double() / self.process.time_scale).tolist()
        return torch.stack([flow_velocity(row[None], t)[0] for row, t in zip(x, times, strict=True)]).to(x.dtype)
