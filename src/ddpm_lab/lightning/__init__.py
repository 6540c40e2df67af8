"""Lightning side: the DiffusionModule, callbacks and the local metrics record."""

from .callbacks import SampleDistanceCallback, SampleImagesCallback
from .metrics_record import MetricsRecordLogger, read_history, read_summary, write_summary
from .module import DiffusionModule

__all__ = [
    "DiffusionModule",
    "MetricsRecordLogger",
    "SampleDistanceCallback",
    "SampleImagesCallback",
    "read_history",
    "read_summary",
    "write_summary",
]
