"""Training losses: L_simple (mse / l1 on the parameterisation's target), the variational bound (kl) and the
IDDPM hybrid, with an optional per-timestep loss weighting. The network is an argument.

Loss weightings are defined once, in x0 space: a weighted loss is w(t) ||x0 - x0_hat||^2. Because an error
delta in x0 is an error sqrt(SNR) delta in eps and sqrt(SNR + 1) delta in v (at fixed x_t, SNR = abar/(1-abar)),
the weight applied to each parameterisation's MSE is
    eps: w / SNR        x0: w        v: w / (SNR + 1)
so the same weighting trains the same objective whatever the network predicts.
  none     w = the parameterisation's own (SNR for eps, 1 for x0, SNR + 1 for v): the plain MSE
  min_snr  w = min(SNR, gamma)                       (Hang et al. 2023, eq. 13; gamma = 5)
  p2       w = SNR / (k + SNR)^gamma                 (Choi et al. 2022, eq. 8 on the eps loss; k = 1, gamma = 1)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from . import parameterization as param
from .choices import check_choice
from .likelihoods import discretized_gaussian_log_likelihood, mean_flat, normal_kl

if TYPE_CHECKING:
    from .gaussian_diffusion import GaussianDiffusion, Model

LOSS_TYPES = ("mse", "l1", "kl", "hybrid")
LOSS_WEIGHTINGS = ("none", "min_snr", "p2")


def loss_term_names(loss_type: str) -> tuple[str, ...]:
    """The keys of the dict ``training_losses`` returns for ``loss_type``."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss_type {loss_type!r}; choose one of: {', '.join(LOSS_TYPES)}.")
    if loss_type == "kl":
        return ("loss", "vlb")
    error = "l1" if loss_type == "l1" else "mse"
    return ("loss", error, "vlb") if loss_type == "hybrid" else ("loss", error)


def check_loss_weighting(weighting: str, loss_type: str, min_snr_gamma: float, p2_gamma: float, p2_k: float) -> None:
    """Raise a ValueError for an unknown weighting, bad constants, or a loss it cannot weight."""
    check_choice("loss_weighting", weighting, LOSS_WEIGHTINGS)
    if weighting != "none" and loss_type == "kl":
        raise ValueError(
            f"loss_weighting={weighting!r} reweights the mse/l1 term, but loss=kl has none: the bound's "
            "weights are fixed by the model. Use loss=mse (or hybrid), or loss_weighting=none."
        )
    if not min_snr_gamma > 0:
        raise ValueError(f"min_snr_gamma must be > 0 (Hang et al. use 5), got {min_snr_gamma}.")
    if not p2_k > 0 or p2_gamma < 0:
        raise ValueError(
            f"p2 needs p2_k > 0 and p2_gamma >= 0 (Choi et al.: k = 1, gamma = 0.5 or 1), got k={p2_k}, "
            f"gamma={p2_gamma}."
        )


def snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio abar / (1 - abar) (Kingma et al. 2021)."""
    return alpha_bar / (1.0 - alpha_bar)


def x0_space_weight(weighting: str, snr_t: torch.Tensor, min_snr_gamma: float, p2_gamma: float, p2_k: float):
    """w(t) of the weighted x0 loss w ||x0 - x0_hat||^2 (see the module docstring)."""
    if weighting == "min_snr":
        return snr_t.clamp(max=min_snr_gamma)
    if weighting == "p2":
        return snr_t / (p2_k + snr_t) ** p2_gamma
    raise ValueError(f"x0_space_weight has no weight for {weighting!r}.")


def parameterization_gain(mean_type: str, snr_t: torch.Tensor) -> torch.Tensor:
    """k(t) with ||target - prediction||^2 = k ||x0 - x0_hat||^2: SNR (eps), 1 (x0), SNR + 1 (v)."""
    return {"eps": snr_t, "x0": torch.ones_like(snr_t), "v": snr_t + 1.0}[mean_type]


def mse_weight(diffusion: GaussianDiffusion, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
    """The factor (B,) on the parameterisation's per-example error at timesteps t; None for "none"."""
    if diffusion.loss_weighting == "none":
        return None
    alpha_bar = diffusion.coef("alphas_cumprod", t, like).reshape(-1)
    snr_t = snr(alpha_bar)
    w = x0_space_weight(diffusion.loss_weighting, snr_t, diffusion.min_snr_gamma, diffusion.p2_gamma, diffusion.p2_k)
    return w / parameterization_gain(diffusion.mean_type, snr_t)


def vlb_term_bits(
    diffusion: GaussianDiffusion,
    model_output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    clip_denoised: bool,
) -> torch.Tensor:
    """Per-example L_t in bits/dim: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for t > 0, and the
    discretised Gaussian decoder NLL -log p(x0 | x_1) for t = 0 (Ho et al. eq. 5)."""
    true_mean, _, true_log_variance = diffusion.q_posterior(x0, x_t, t)
    out = diffusion.p_mean_variance(model_output, x_t, t, clip_denoised)
    kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / math.log(2.0)
    decoder_nll = -mean_flat(
        discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"])
    ) / math.log(2.0)
    return torch.where(t == 0, decoder_nll, kl)


def check_offset_noise(offset_noise: float, sample_shape: tuple[int, ...]) -> None:
    """Offset noise shifts whole channels, so it needs image samples (C, H, W): a ValueError for point data."""
    if offset_noise > 0 and len(sample_shape) < 2:
        raise ValueError(
            f"diffusion.offset_noise={offset_noise} shifts whole image channels, but the samples have shape "
            f"{tuple(sample_shape)} (points: no spatial dims). Set diffusion.offset_noise=0 for point data."
        )


def training_noise(x0: torch.Tensor, offset_noise: float) -> torch.Tensor:
    """eps ~ N(0, I) plus, with offset noise (Guttenberg 2023), ``offset_noise`` times one N(0, 1) draw per
    example and channel, constant over the spatial dims (lets the model change an image's mean brightness)."""
    noise = torch.randn_like(x0)
    check_offset_noise(offset_noise, tuple(x0.shape[1:]))
    if offset_noise > 0:
        shape = (*x0.shape[:2], *([1] * (x0.ndim - 2)))
        noise = noise + offset_noise * torch.randn(shape, dtype=x0.dtype, device=x0.device)
    return noise


def training_losses(
    diffusion: GaussianDiffusion, model: Model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per-example loss terms (each (B,)) for x0 (B, ...) at timesteps t (B,).

    Returns "loss" (what to minimise) and its terms: "mse" (or "l1") on the parameterisation's target, before
    any loss weighting, and, for kl/hybrid, "vlb" (L_t in bits/dim). The kl loss is T * L_t, an unbiased
    estimate of L_vlb - L_T under uniform t; hybrid adds vlb_weight * T * L_t with the mean detached (IDDPM
    eq. 16). A loss weighting multiplies the mse/l1 term inside "loss".
    """
    noise = training_noise(x0, diffusion.offset_noise) if noise is None else noise
    x_t = diffusion.q_sample(x0, t, noise)
    model_output = model(x_t, diffusion.model_timesteps(t))
    mean_part, var_part = diffusion.split_output(model_output, x_t)
    terms: dict[str, torch.Tensor] = {}
    if diffusion.loss_type == "kl":
        terms["vlb"] = vlb_term_bits(diffusion, model_output, x0, x_t, t, clip_denoised=False)
        terms["loss"] = terms["vlb"] * diffusion.num_timesteps
        return terms
    target = param.training_target(diffusion.mean_type, x0, noise, diffusion.coef("alphas_cumprod", t, x0))
    error = mean_part - target
    name = "l1" if diffusion.loss_type == "l1" else "mse"
    terms[name] = mean_flat(error.abs() if name == "l1" else error**2)
    weight = mse_weight(diffusion, t, x0)
    terms["loss"] = terms[name] if weight is None else weight.to(terms[name].dtype) * terms[name]
    if diffusion.loss_type == "hybrid":
        # The mean is detached so that L_vlb trains only the variance head (IDDPM section 3.1).
        frozen = mean_part.detach() if var_part is None else torch.cat([mean_part.detach(), var_part], dim=1)
        terms["vlb"] = vlb_term_bits(diffusion, frozen, x0, x_t, t, clip_denoised=False)
        terms["loss"] = terms["loss"] + diffusion.vlb_weight * diffusion.num_timesteps * terms["vlb"]
    return terms
