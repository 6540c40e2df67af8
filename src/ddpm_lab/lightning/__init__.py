"""Lightning side: the DiffusionModule, callbacks and the local metrics record."""

from ..run_record import read_history, read_summary, write_summary
from .callbacks import SampleDistanceCallback, SampleImagesCallback
from .evaluation import NLLCallback
from .fid_callback import FIDCallback
from .metrics_record import MetricsRecordLogger
from .module import DiffusionModule
from .posthoc_ema import PostHocEMACallback

__all__ = [
    "DiffusionModule",
    "FIDCallback",
    "MetricsRecordLogger",
    "NLLCallback",
    "PostHocEMACallback",
    "SampleDistanceCallback",
    "SampleImagesCallback",
    "read_history",
    "read_summary",
    "write_summary",
]
