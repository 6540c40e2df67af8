"""The diffusion core: schedules, forward process, posterior, parameterisations, variances, losses, samplers
and the NLL bound of DDPM, and the EDM and flow-matching objectives beside it (``objectives``). Pure PyTorch:
importing it pulls in neither Lightning nor Hydra."""

from typing import Any

from .edm import EDM_SAMPLERS, EDMProcess, karras_sigmas
from .flow_matching import FLOW_SAMPLERS, FlowMatchingProcess
from .gaussian_diffusion import VAR_TYPES, GaussianDiffusion
from .guidance import balanced_labels, drop_labels, guided_model
from .likelihoods import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .losses import LOSS_TYPES, LOSS_WEIGHTINGS, loss_term_names
from .objectives import OBJECTIVES, ddpm_settings_conflict
from .ode_likelihood import ode_log_likelihood
from .parameterization import MEAN_TYPES, eps_from_x0, v_from_x0_eps, x0_from_eps, x0_from_v
from .respacing import SPACINGS, respaced_betas, space_timesteps
from .sampling import DEFAULT_ETA, SAMPLERS, STOCHASTIC_ETA, Trajectory, default_eta, resolve_sampling
from .schedules import BETA_SCHEDULES, make_beta_schedule, rescale_zero_terminal_snr
from .solvers import ODE_SAMPLERS, model_evaluations
from .timestep_sampling import (
    TIMESTEP_SAMPLERS,
    LossAwareTimestepSampler,
    TimestepSampler,
    UniformTimestepSampler,
    make_timestep_sampler,
)


def build_gaussian_diffusion(
    schedule: str = "linear", num_timesteps: int = 1000, zero_terminal_snr: bool = False, **options: Any
) -> GaussianDiffusion:
    """A GaussianDiffusion from names (what the Hydra config holds): the named schedule's T betas,
    rescaled to alpha-bar_T = 0 with ``zero_terminal_snr`` (Lin et al. 2024, Algorithm 1). ``options`` are
    GaussianDiffusion's own (mean_type, var_type, loss_type, vlb_weight, loss_weighting, min_snr_gamma,
    p2_gamma, p2_k, offset_noise), with its defaults."""
    if not isinstance(zero_terminal_snr, bool):
        raise ValueError(f"zero_terminal_snr must be true or false, got {zero_terminal_snr!r}.")
    betas = make_beta_schedule(schedule, num_timesteps)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return GaussianDiffusion(betas, **options)


__all__ = [
    "BETA_SCHEDULES",
    "DEFAULT_ETA",
    "EDM_SAMPLERS",
    "FLOW_SAMPLERS",
    "LOSS_TYPES",
    "LOSS_WEIGHTINGS",
    "MEAN_TYPES",
    "OBJECTIVES",
    "ODE_SAMPLERS",
    "SAMPLERS",
    "SPACINGS",
    "STOCHASTIC_ETA",
    "TIMESTEP_SAMPLERS",
    "VAR_TYPES",
    "EDMProcess",
    "FlowMatchingProcess",
    "GaussianDiffusion",
    "LossAwareTimestepSampler",
    "TimestepSampler",
    "Trajectory",
    "UniformTimestepSampler",
    "balanced_labels",
    "build_gaussian_diffusion",
    "ddpm_settings_conflict",
    "default_eta",
    "discretized_gaussian_log_likelihood",
    "drop_labels",
    "eps_from_x0",
    "guided_model",
    "karras_sigmas",
    "loss_term_names",
    "make_beta_schedule",
    "make_timestep_sampler",
    "mean_flat",
    "model_evaluations",
    "normal_kl",
    "ode_log_likelihood",
    "rescale_zero_terminal_snr",
    "resolve_sampling",
    "respaced_betas",
    "space_timesteps",
    "v_from_x0_eps",
    "x0_from_eps",
    "x0_from_v",
]
