"""The Gaussian diffusion process: forward q, posterior, reverse p_theta, training losses (Ho et al. 2020;
Nichol & Dhariwal 2021). The network is always an argument: ``model(x_t, t) -> output``.

Timesteps are 0-based: t = 0 is the first noising step and t = T-1 the last. Tables are precomputed in
float64 and cast to the data's dtype only when indexed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import losses
from . import parameterization as param
from .choices import check_choice
from .likelihoods import gaussian_prior_kl_bits
from .losses import LOSS_TYPES
from .nll import nll_bits_per_dim
from .respacing import respaced_betas, space_timesteps
from .sampling import SAMPLERS, sample_loop
from .solvers import model_evaluations
from .timestep_sampling import make_timestep_sampler

VAR_TYPES = ("fixed_small", "fixed_large", "learned", "learned_range")
LEARNED_VAR_TYPES = ("learned", "learned_range")

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GaussianDiffusion:
    """A T-step Gaussian diffusion with betas (T,) and the chosen mean/variance/loss types.

    Args:
        betas: float tensor (T,), 0 < beta <= 1.
        mean_type: what the network predicts: "eps", "x0" or "v".
        var_type: reverse-process variance: "fixed_small" (posterior beta-tilde), "fixed_large" (beta; at t = 0
            beta-tilde_1, as in DDPM/IDDPM),
            "learned" (network outputs log variance) or "learned_range" (network outputs v in [-1, 1],
            log var = frac log beta + (1 - frac) log beta-tilde, frac = (v + 1) / 2; IDDPM eq. 15).
        loss_type: "mse" (L_simple), "l1", "kl" (the variational bound) or "hybrid" (L_simple + vlb_weight *
            L_vlb, with the mean stop-gradiented inside L_vlb; IDDPM eq. 16). A learned variance needs kl or
            hybrid; hybrid needs a learned variance (with a fixed one it is exactly mse).
        vlb_weight: lambda of the hybrid loss (IDDPM: 0.001).
        loss_weighting: "none", "min_snr" (gamma ``min_snr_gamma``) or "p2" (``p2_gamma``, ``p2_k``) on the
            mse/l1 term, defined in x0 space so it means the same for eps/x0/v (see ``losses``).
        offset_noise: strength of offset noise in training (0 = plain N(0, I) noise; images only).
        timestep_map: int64 (T,), the timestep the network is told for each step of this chain (respacing).
    """

    objective = "ddpm"
    samplers = SAMPLERS
    nll_metric = "val/nll_bpd"  # the variational bound (``nll``), never mixed with an ODE likelihood

    def __init__(
        self,
        betas: torch.Tensor,
        mean_type: str = "eps",
        var_type: str = "fixed_large",
        loss_type: str = "mse",
        vlb_weight: float = 0.001,
        loss_weighting: str = "none",
        min_snr_gamma: float = 5.0,
        p2_gamma: float = 1.0,
        p2_k: float = 1.0,
        offset_noise: float = 0.0,
        timestep_map: torch.Tensor | None = None,
    ) -> None:
        check_choice("mean_type", mean_type, param.MEAN_TYPES)
        check_choice("var_type", var_type, VAR_TYPES)
        check_choice("loss_type", loss_type, LOSS_TYPES)
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a 1-D tensor with T >= 1 entries, got shape {tuple(betas.shape)}.")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("every beta must lie in (0, 1]; check the schedule and num_timesteps.")
        if var_type in LEARNED_VAR_TYPES and loss_type in ("mse", "l1"):
            raise ValueError(
                f"var_type={var_type!r} learns the reverse variance, but loss_type={loss_type!r} gives the "
                "variance output no gradient, so it would stay at its initial value. Use loss=hybrid (L_simple + "
                "lambda L_vlb, IDDPM) or loss=kl, or a fixed variance (fixed_small / fixed_large)."
            )
        if var_type not in LEARNED_VAR_TYPES and loss_type == "hybrid":
            # In hybrid the vlb term sees the mean detached (eq. 16) and a fixed variance has no parameters,
            # so the term adds no gradient at all: the run would be loss=mse under another name.
            raise ValueError(
                f"loss_type='hybrid' with var_type={var_type!r} trains exactly like loss=mse: the vlb term only "
                "trains a learned variance (the mean is detached in it), and a fixed variance has nothing to learn. "
                "Use loss=mse with a fixed variance, loss=kl to train the mean through the bound, or "
                "variance=learned_range with loss=hybrid (IDDPM)."
            )
        if vlb_weight < 0:
            raise ValueError(f"vlb_weight must be >= 0, got {vlb_weight}.")
        losses.check_loss_weighting(loss_weighting, loss_type, min_snr_gamma, p2_gamma, p2_k)
        if not offset_noise >= 0:
            raise ValueError(f"offset_noise must be >= 0 (0 = off; Guttenberg uses 0.1), got {offset_noise}.")
        if mean_type == "eps" and float(torch.prod(1.0 - betas)) == 0.0:
            # x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) divides by zero where abar = 0.
            raise ValueError(
                "this schedule reaches zero terminal SNR (alpha-bar_T = 0), where an eps-prediction cannot give "
                "x0: the last step would divide by sqrt(alpha-bar_T) = 0. Use parameterization=v (what Lin et al. "
                "2024 pair with it) or parameterization=x0, or diffusion.zero_terminal_snr=false."
            )
        self.mean_type, self.var_type, self.loss_type = mean_type, var_type, loss_type
        self.vlb_weight = float(vlb_weight)
        self.loss_weighting = loss_weighting
        self.min_snr_gamma, self.p2_gamma, self.p2_k = float(min_snr_gamma), float(p2_gamma), float(p2_k)
        self.offset_noise = float(offset_noise)
        self.num_timesteps = int(betas.numel())
        identity = torch.arange(self.num_timesteps, dtype=torch.long)
        self.timestep_map = identity if timestep_map is None else torch.as_tensor(timestep_map, dtype=torch.long)

        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # beta-tilde_0 = 0, so its log is clipped to beta-tilde_1 (only the decoder uses t = 0).
        clipped = torch.cat([posterior_variance[1:2], posterior_variance[1:]]) if self.num_timesteps > 1 else betas
        self.tables: dict[str, torch.Tensor] = {
            "betas": betas,
            "log_betas": torch.log(betas),
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "sqrt_alphas": alphas.sqrt(),
            "sqrt_betas": betas.sqrt(),
            "posterior_log_variance_clipped": torch.log(clipped),
            # fixed_large: sigma_t^2 = beta_t, except at t = 0, where DDPM/IDDPM use beta-tilde_1 (the decoder's
            # variance), so that NLL in bits/dim is comparable with the papers'.
            "fixed_large_log_variance": torch.log(
                torch.cat([posterior_variance[1:2], betas[1:]]) if self.num_timesteps > 1 else betas
            ),
            # Posterior mean coefficients of x0 and x_t (Ho et al. eq. 7).
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
        }
        self._device_tables: dict[str, dict[str, torch.Tensor]] = {}
        self._device_timestep_maps: dict[str, torch.Tensor] = {}
        self._respaced: dict[tuple[int, str], GaussianDiffusion] = {}

    # ------------------------------------------------------------------ tables
    @property
    def betas(self) -> torch.Tensor:
        return self.tables["betas"]

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.tables["alphas_cumprod"]

    @property
    def learned_variance(self) -> bool:
        return self.var_type in LEARNED_VAR_TYPES

    def model_output_channels(self, data_channels: int) -> int:
        """Channels the network must output for data with ``data_channels`` channels."""
        return 2 * data_channels if self.learned_variance else data_channels

    def check_model_channels(self, model_out_channels: int, data_channels: int) -> None:
        """Raise a ValueError now if a network's output channels do not fit this variance type."""
        expected = self.model_output_channels(data_channels)
        if model_out_channels != expected:
            why = "mean and variance halves" if self.learned_variance else "the mean prediction only"
            raise ValueError(
                f"var_type={self.var_type!r} needs a network with {expected} output channels ({why} for "
                f"{data_channels}-channel data), but the network outputs {model_out_channels}. Build the network "
                f"with learned_variance={self.learned_variance}."
            )

    def make_timestep_sampler(self, name: str):
        """The named training-timestep sampler over this chain's T steps (``timestep_sampling``)."""
        return make_timestep_sampler(name, self.num_timesteps)

    def model_evaluations(self, sampler: str, steps: int | None) -> int:
        """NFE of ``steps`` steps of ``sampler`` (None: all T)."""
        return model_evaluations(sampler, self.num_timesteps if steps is None else steps)

    def coef(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at timesteps t (B,), cast to x's dtype and shaped (B, 1, ...) to broadcast with x."""
        key = str(x.device)
        if key not in self._device_tables:
            dtype = torch.float32 if x.device.type == "mps" else torch.float64
            self._device_tables[key] = {k: v.to(x.device, dtype) for k, v in self.tables.items()}
        values = self._device_tables[key][name][t.to(x.device)]
        return values.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The timesteps the network is conditioned on (the original chain's, after respacing). The map is
        copied to each device once (like the tables): a copy per call is a host-device sync per step."""
        key = str(t.device)
        if key not in self._device_timestep_maps:
            self._device_timestep_maps[key] = self.timestep_map.to(t.device)
        return self._device_timestep_maps[key][t]

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I) (Ho et al. eq. 4). x0 (B, ...), t (B,)."""
        noise = torch.randn_like(x0) if noise is None else noise
        return self.coef("sqrt_alphas_cumprod", t, x0) * x0 + self.coef("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def q_step(self, x_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One forward step q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (Ho et al. eq. 2)."""
        noise = torch.randn_like(x_prev) if noise is None else noise
        return self.coef("sqrt_alphas", t, x_prev) * x_prev + self.coef("sqrt_betas", t, x_prev) * noise

    def q_mean_log_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.coef("sqrt_alphas_cumprod", t, x0) * x0
        log_variance = torch.log1p(-self.coef("alphas_cumprod", t, x0)).expand_as(x0)
        return mean, log_variance

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and (clipped) log variance of q(x_{t-1} | x_t, x_0) (Ho et al. eqs. 6-7)."""
        mean = self.coef("posterior_mean_coef1", t, x_t) * x0 + self.coef("posterior_mean_coef2", t, x_t) * x_t
        log_variance = self.coef("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        variance = torch.where(t.reshape(mean.shape[:1] + (1,) * (x_t.ndim - 1)) == 0, 0.0, log_variance.exp())
        return mean, variance, log_variance

    # ------------------------------------------------------------------ reverse process
    def split_output(self, model_output: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split a network output (B, 2C, ...) into (mean part, variance part); variance part is None if fixed."""
        channels = x_t.shape[1]
        if model_output.shape[1] != self.model_output_channels(channels):
            self.check_model_channels(model_output.shape[1], channels)
        if not self.learned_variance:
            return model_output, None
        return model_output[:, :channels], model_output[:, channels:]

    def p_mean_variance(
        self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool = False
    ) -> dict[str, torch.Tensor]:
        """Mean, variance, log variance of p(x_{t-1} | x_t), plus pred_x0 and pred_eps (all shaped like x_t)."""
        mean_part, var_part = self.split_output(model_output, x_t)
        if self.var_type == "fixed_small":
            log_variance = self.coef("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        elif self.var_type == "fixed_large":
            log_variance = self.coef("fixed_large_log_variance", t, x_t).expand_as(x_t)
        elif self.var_type == "learned":
            log_variance = var_part
        else:  # learned_range
            frac = (var_part + 1.0) / 2.0
            min_log = self.coef("posterior_log_variance_clipped", t, x_t)
            max_log = self.coef("log_betas", t, x_t)
            log_variance = frac * max_log + (1.0 - frac) * min_log
        alpha_bar = self.coef("alphas_cumprod", t, x_t)
        pred_x0 = param.predicted_x0(self.mean_type, x_t, mean_part, alpha_bar)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior(pred_x0, x_t, t)
        return {
            "mean": mean,
            "variance": log_variance.exp(),
            "log_variance": log_variance,
            "pred_x0": pred_x0,
            "pred_eps": param.eps_from_x0(x_t, pred_x0, alpha_bar),
        }

    def p_sample(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        clip_denoised: bool = False,
    ) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1} ~ p(x_{t-1} | x_t) (Ho et al. Algorithm 2); no noise at t = 0."""
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        noise = torch.randn_like(x_t) if noise is None else noise
        nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        return out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise

    def ddim_step(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        t_prev: torch.Tensor | int,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        clip_denoised: bool = False,
    ) -> torch.Tensor:
        """DDIM update x_t -> x_{t_prev} (Song et al. 2021, eq. 12); t_prev = -1 means x_0 (abar = 1).

        sigma = eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev); eta = 1 is DDPM-like.
        """
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        # An int t_prev becomes a device tensor by a fill, not a host-to-device copy.
        t_prev = torch.full_like(t, t_prev) if isinstance(t_prev, int) else t_prev.to(t.device).expand(t.shape[0])
        alpha_bar = self.coef("alphas_cumprod", t, x_t)
        alpha_bar_prev = torch.where(
            t_prev.reshape(alpha_bar.shape) >= 0, self.coef("alphas_cumprod", t_prev.clamp(min=0), x_t), 1.0
        )
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
        direction = (1.0 - alpha_bar_prev - sigma**2).clamp(min=0.0).sqrt() * out["pred_eps"]
        x_prev = alpha_bar_prev.sqrt() * out["pred_x0"] + direction
        if eta > 0:
            x_prev = x_prev + sigma * (torch.randn_like(x_t) if noise is None else noise)
        return x_prev

    # ------------------------------------------------------------------ losses (``losses``)
    def vlb_term_bits(
        self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool
    ) -> torch.Tensor:
        """Per-example L_t in bits/dim (B,); see ``losses.vlb_term_bits``."""
        return losses.vlb_term_bits(self, model_output, x0, x_t, t, clip_denoised)

    def prior_bits(self, x0: torch.Tensor) -> torch.Tensor:
        """Per-example KL(q(x_T | x0) || N(0, I)) in bits/dim (L_T; no parameters)."""
        t_last = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x0.device)
        return gaussian_prior_kl_bits(*self.q_mean_log_variance(x0, t_last))

    def training_losses(
        self, model: Model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-example loss terms for x0 (B, ...) at timesteps t (B,); see ``losses.training_losses``."""
        return losses.training_losses(self, model, x0, t, noise)

    # ------------------------------------------------------------------ respacing, sampling, likelihood
    def spaced_timesteps(self, steps: int, spacing: str = "uniform") -> list[int]:
        """The ``steps`` timesteps (ascending) a ``spacing`` keeps of this chain (``respacing``)."""
        return space_timesteps(self.num_timesteps, steps, spacing, self.alphas_cumprod)

    def respaced(self, steps: int, spacing: str = "uniform") -> GaussianDiffusion:
        """The ``steps``-step chain over the timesteps ``spacing`` keeps (IDDPM respacing), same types; cached."""
        if steps == self.num_timesteps:
            return self
        if (steps, spacing) not in self._respaced:
            kept = self.spaced_timesteps(steps, spacing)
            self._respaced[steps, spacing] = GaussianDiffusion(
                respaced_betas(self.alphas_cumprod, kept),
                self.mean_type,
                self.var_type,
                self.loss_type,
                self.vlb_weight,
                self.loss_weighting,
                self.min_snr_gamma,
                self.p2_gamma,
                self.p2_k,
                self.offset_noise,
                timestep_map=self.timestep_map[torch.as_tensor(kept)],
            )
        return self._respaced[steps, spacing]

    def sample(self, model: Model, shape: tuple[int, ...], **options: Any) -> Any:
        """Generate samples of ``shape`` from x_T ~ N(0, I): ``sampling.sample_loop``, whose keywords
        (sampler, steps, eta, spacing, generator, clip_denoised, progress, return_trajectory, device) and
        defaults hold here.

        ``clip_denoised=True`` clamps each predicted x0 to [-1, 1]: right for images scaled to [-1, 1] (what
        DDPM does, and what ``DiffusionModule`` passes for image data), wrong for any other data (standardised
        2-D points would be squeezed into the unit square), so it is off unless asked for."""
        return sample_loop(self, model, shape, **options)

    def nll_bits_per_dim(self, model: Model, x0: torch.Tensor, **options: Any) -> Any:
        """Per-example NLL bound in bits/dim for 8-bit data x0 in [-1, 1]: ``nll.nll_bits_per_dim``, whose
        keywords (generator, clip_denoised, return_terms, progress) and defaults hold here."""
        return nll_bits_per_dim(self, model, x0, **options)
