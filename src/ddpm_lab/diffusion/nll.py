"""Negative log-likelihood bound in bits/dim (Ho et al. section 3.3 and Table 2; IDDPM section 2):

L = L_T + sum_{t>0} L_{t-1} + L_0, with L_T = KL(q(x_T|x_0) || N(0, I)), L_{t-1} the KL between the true
and model posteriors, and L_0 = -log p(x_0 | x_1) under the discretised Gaussian decoder (8-bit data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from .noise import randn

if TYPE_CHECKING:
    from .gaussian_diffusion import GaussianDiffusion, Model


@torch.no_grad()
def nll_bits_per_dim(
    diffusion: GaussianDiffusion,
    model: Model,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    clip_denoised: bool = True,
    return_terms: bool = False,
    progress: bool = False,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Per-example bound (B,) in bits/dim for x0 (B, ...) in [-1, 1] (one network call per timestep).

    With ``return_terms`` a dict: "total_bpd" (B,), "prior_bpd" (B,) and "vb_terms" (B, T) where column t
    is L_t (t = 0 the decoder term).
    """
    batch = x0.shape[0]
    terms = torch.zeros(batch, diffusion.num_timesteps, dtype=torch.float64, device=x0.device)
    for step in tqdm(reversed(range(diffusion.num_timesteps)), desc="nll", disable=not progress):
        t = torch.full((batch,), step, dtype=torch.long, device=x0.device)
        x_t = diffusion.q_sample(x0, t, randn(x0.shape, generator, x0.device))
        output = model(x_t, diffusion.model_timesteps(t))
        terms[:, step] = diffusion.vlb_term_bits(output, x0, x_t, t, clip_denoised).double()
    prior = diffusion.prior_bits(x0).double()
    total = terms.sum(dim=1) + prior
    if return_terms:
        return {"total_bpd": total, "prior_bpd": prior, "vb_terms": terms}
    return total
