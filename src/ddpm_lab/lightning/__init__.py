"""Lightning side: the DiffusionModule, callbacks and the local metrics record."""

from .callbacks import SampleDistanceCallback, SampleImagesCallback
from .evaluation import FIDCallback, NLLCallback
from .metrics_record import MetricsRecordLogger, read_history, read_summary, write_summary
from .module import DiffusionModule

__all__ = [
    "DiffusionModule",
    "FIDCallback",
    "MetricsRecordLogger",
    "NLLCallback",
    "SampleDistanceCallback",
    "SampleImagesCallback",
    "read_history",
    "read_summary",
    "write_summary",
]
