"""ddpm-lab: a Lightning + Hydra framework for denoising diffusion probabilistic models."""

__version__ = "0.1.0"
