"""Sample-quality metrics: sliced Wasserstein distance for 2-D data; FID/KID/IS for images."""

from .sample_distance import mmd_distance, sliced_wasserstein_distance

__all__ = ["mmd_distance", "sliced_wasserstein_distance"]
