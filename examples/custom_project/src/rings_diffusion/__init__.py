"""An example project on ddpm-lab: our own network (RingDenoiser) and data (RingsDataModule)."""

from .data import RingsDataModule
from .network import RingDenoiser

__all__ = ["RingDenoiser", "RingsDataModule"]
