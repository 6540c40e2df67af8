"""The objectives one config switch (the ``process`` group) chooses between, and what of the DDPM family's
settings each one cannot use.

  ddpm           ``GaussianDiffusion``: the discrete T-step chain (schedule, variance, loss, parameterisation)
  edm            ``EDMProcess``: Karras et al. 2022's preconditioned denoiser, log-normal sigma, Heun sampler
  flow_matching  ``FlowMatchingProcess``: the linear interpolant, velocity target, Euler/Heun/midpoint ODE

Every objective offers the same interface to the LightningModule and the CLIs: ``training_losses(model, x0, t,
noise)``, ``sample(model, shape, ...)``, ``nll_bits_per_dim``, ``make_timestep_sampler``, ``model_evaluations``,
``model_output_channels``, ``samplers``, ``nll_metric`` and ``objective``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .edm import EDMProcess
from .flow_matching import FlowMatchingProcess
from .gaussian_diffusion import GaussianDiffusion

OBJECTIVES = {"ddpm": GaussianDiffusion, "edm": EDMProcess, "flow_matching": FlowMatchingProcess}

# DDPM settings (keys of the ``diffusion`` node) that change what a run trains, with the value that leaves them
# out of it: a continuous-time objective refuses any other value rather than train without it.
DDPM_ONLY = {
    "var_type": ("variance", ("fixed_small", "fixed_large"), "a learned reverse variance is the discrete chain's"),
    "loss_type": ("loss", ("mse",), "kl/hybrid train the discrete chain's variational bound, l1 its L1 loss"),
    "loss_weighting": ("loss_weighting", ("none",), "EDM weights by lambda(sigma), flow matching by its t law"),
    "zero_terminal_snr": ("diffusion.zero_terminal_snr", (False,), "it rescales the DDPM beta schedule"),
    "offset_noise": ("diffusion.offset_noise", (0, 0.0), "it is implemented for the DDPM training noise only"),
}


def ddpm_settings_conflict(objective: str, ddpm_settings: Mapping[str, Any]) -> str | None:
    """A one-paragraph message naming the DDPM-only settings ``objective`` cannot use, or None."""
    if objective == "ddpm":
        return None
    clashes = []
    for key, (where, neutral, why) in DDPM_ONLY.items():
        value = ddpm_settings.get(key, neutral[0])
        if value not in neutral:
            clashes.append(f"{where}={value} ({why}; use {where}={neutral[0]})")
    if not clashes:
        return None
    return (
        f"process={objective} cannot use these DDPM settings: {'; '.join(clashes)}. They would be silently "
        f"ignored, so the run is refused. Drop them, or train with process=ddpm. (schedule, num_timesteps and "
        f"parameterization are the DDPM chain's too; {objective} has its own, in the process node.)"
    )
