"""The diffusion core: schedules, forward process, posterior, parameterisations, variances, losses, samplers
and the NLL bound. Pure PyTorch: importing it pulls in neither Lightning nor Hydra."""

from .gaussian_diffusion import LOSS_TYPES, SAMPLERS, VAR_TYPES, GaussianDiffusion, loss_term_names
from .likelihoods import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .parameterization import MEAN_TYPES, eps_from_x0, v_from_x0_eps, x0_from_eps, x0_from_v
from .respacing import respaced_betas, space_timesteps
from .sampling import Trajectory
from .schedules import BETA_SCHEDULES, make_beta_schedule
from .timestep_sampling import (
    TIMESTEP_SAMPLERS,
    LossAwareTimestepSampler,
    TimestepSampler,
    UniformTimestepSampler,
    make_timestep_sampler,
)


def build_gaussian_diffusion(
    schedule: str = "linear",
    num_timesteps: int = 1000,
    mean_type: str = "eps",
    var_type: str = "fixed_large",
    loss_type: str = "mse",
    vlb_weight: float = 0.001,
) -> GaussianDiffusion:
    """A GaussianDiffusion from names (what the Hydra config holds)."""
    return GaussianDiffusion(make_beta_schedule(schedule, num_timesteps), mean_type, var_type, loss_type, vlb_weight)


__all__ = [
    "BETA_SCHEDULES",
    "LOSS_TYPES",
    "MEAN_TYPES",
    "SAMPLERS",
    "TIMESTEP_SAMPLERS",
    "VAR_TYPES",
    "GaussianDiffusion",
    "LossAwareTimestepSampler",
    "TimestepSampler",
    "Trajectory",
    "UniformTimestepSampler",
    "build_gaussian_diffusion",
    "discretized_gaussian_log_likelihood",
    "eps_from_x0",
    "loss_term_names",
    "make_beta_schedule",
    "make_timestep_sampler",
    "mean_flat",
    "normal_kl",
    "respaced_betas",
    "space_timesteps",
    "v_from_x0_eps",
    "x0_from_eps",
    "x0_from_v",
]
