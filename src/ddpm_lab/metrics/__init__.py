"""Sample-quality metrics: FID/KID/IS with the standard InceptionV3, cached reference statistics, and
distances for 2-D data. No Lightning import."""

from .fid import GaussianStats, frechet_distance, inception_score, kernel_inception_distance, precision_recall
from .image_metrics import MetricOptions, combine_evaluations, image_metrics
from .inception import (
    InceptionFeatures,
    InceptionWeightsError,
    default_weights_path,
    resolve_inception_weights,
)
from .reference import ReferenceStats, load_or_compute_reference
from .sample_distance import mmd_distance, mmd_squared

__all__ = [
    "GaussianStats",
    "InceptionFeatures",
    "InceptionWeightsError",
    "MetricOptions",
    "ReferenceStats",
    "combine_evaluations",
    "default_weights_path",
    "frechet_distance",
    "image_metrics",
    "inception_score",
    "kernel_inception_distance",
    "load_or_compute_reference",
    "mmd_distance",
    "mmd_squared",
    "precision_recall",
    "resolve_inception_weights",
]
