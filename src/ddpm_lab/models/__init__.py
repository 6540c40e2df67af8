"""Networks for diffusion: the DDPM U-Net and an MLP for 2-D data (no Lightning or Hydra import)."""
