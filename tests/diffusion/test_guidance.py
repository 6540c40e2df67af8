"""Classifier-free guidance against closed forms.

Two classes of 1-D Gaussian data, x0 | c ~ N(MU_c, S^2). With x_t = sqrt(a) x0 + sqrt(1 - a) eps, the exact
conditional denoiser is the Gaussian posterior mean (test_samplers.py), and the exact unconditional one (the
"null" label) mixes the classes' posterior means with the weights p(c | x_t) ~ N(x_t; sqrt(a) MU_c,
a S^2 + 1 - a). Sampling with guidance 1 must reproduce each class, guidance 0 the mixture.
"""

from __future__ import annotations

import math

import pytest
import torch

from ddpm_lab.diffusion import GaussianDiffusion, balanced_labels, drop_labels, guided_model, make_beta_schedule

MU, S, NULL = torch.tensor([-1.0, 1.0]), 0.3, 2


def exact_network(diffusion: GaussianDiffusion):
    """eps-network(x_t, t, y): exact for y in {0, 1}, the exact mixture's for y = NULL."""

    def network(x, t, y):
        a = diffusion.coef("alphas_cumprod", t, x)
        var = a * S**2 + 1 - a
        means = MU.to(x.dtype)[None, :]  # (1, 2)
        x0_per_class = means + a.sqrt() * S**2 * (x - a.sqrt() * means) / var  # (B, 2)
        log_w = -((x - a.sqrt() * means) ** 2) / (2 * var)
        weights = torch.softmax(log_w, dim=1)
        mixture = (weights * x0_per_class).sum(1, keepdim=True)
        conditional = x0_per_class.gather(1, y.clamp(max=1)[:, None])
        x0 = torch.where((y == NULL)[:, None], mixture, conditional)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    return network


def sample(labels: torch.Tensor, scale: float, seed: int = 0) -> torch.Tensor:
    diffusion = GaussianDiffusion(make_beta_schedule("linear", 1000))
    model = guided_model(exact_network(diffusion), labels, scale, NULL)
    generator = torch.Generator().manual_seed(seed)
    return diffusion.sample(
        model, (len(labels), 1), sampler="dpmpp_2m", steps=50, spacing="trailing", generator=generator
    )


def test_guidance_one_samples_each_class_and_zero_the_mixture():
    n = 20_000  # standard errors: mean 0.002 (one class), std 0.0015
    labels = balanced_labels(n, 2)
    x = sample(labels, 1.0).squeeze(1)
    for c in (0, 1):
        assert abs(x[labels == c].mean().item() - MU[c].item()) < 0.02
        assert abs(x[labels == c].std().item() - S) < 0.02
    mixture = sample(labels, 0.0).squeeze(1)
    assert abs(mixture.mean().item()) < 0.03
    assert abs(mixture.std().item() - math.sqrt(S**2 + 1.0)) < 0.02  # var = S^2 + Var(MU)
    assert 0.4 < (mixture > 0).float().mean().item() < 0.6  # both modes


def test_guidance_above_one_sharpens_the_class():
    """Scale s > 1 follows p(x|c)^s p(x)^(1-s): for separated Gaussian classes, a narrower peak at (or beyond)
    the class mean."""
    labels = torch.ones(20_000, dtype=torch.long)
    plain, guided = sample(labels, 1.0).squeeze(1), sample(labels, 3.0).squeeze(1)
    assert guided.std().item() < 0.85 * plain.std().item()
    assert guided.mean().item() > MU[1].item() - 0.02


def test_guided_model_mixes_the_mean_half_only_and_costs_one_batched_call():
    calls = []

    def network(x, t, y):
        calls.append(len(y))
        mean = x * (1.0 + y[:, None].float())  # conditional y=1: 2x, null y=2: 3x
        return torch.cat([mean, y[:, None].float().expand_as(x)], dim=1)  # variance half: the label

    x, t, labels = torch.ones(4, 1), torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    out = guided_model(network, labels, 2.5, null_label=2, mean_channels=1)(x, t)
    assert calls == [8]  # one call on the doubled batch
    assert torch.allclose(out[:, :1], 3.0 + 2.5 * (2.0 - 3.0) * torch.ones(4, 1))
    assert torch.equal(out[:, 1:], torch.ones(4, 1))  # the conditional variance half
    assert torch.equal(guided_model(network, labels, 1.0, 2, 1)(x, t)[:, :1], 2 * x)
    assert torch.equal(guided_model(network, labels, 0.0, 2, 1)(x, t)[:, :1], 3 * x)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        guided_model(network, labels, -1.0, 2)


def test_label_dropout_replaces_the_asked_share_with_the_null_label():
    labels = torch.randint(0, 10, (50_000,), generator=torch.Generator().manual_seed(0))
    dropped = drop_labels(labels, 0.2, null_label=10, generator=torch.Generator().manual_seed(1))
    null = dropped == 10
    assert abs(null.float().mean().item() - 0.2) < 0.01
    assert torch.equal(dropped[~null], labels[~null])
    assert torch.equal(drop_labels(labels, 0.0, 10), labels)
