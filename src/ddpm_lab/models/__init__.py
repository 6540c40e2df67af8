"""Networks for diffusion: the DDPM U-Net and an MLP for 2-D data, plus weight EMA.

No Lightning or Hydra import here (a test checks)."""

from .ema import EMA
from .embeddings import TimestepEmbedding, sinusoidal_embedding
from .mlp import MLPDenoiser
from .unet import UNet, validate_unet_shape

__all__ = ["EMA", "MLPDenoiser", "TimestepEmbedding", "UNet", "sinusoidal_embedding", "validate_unet_shape"]
