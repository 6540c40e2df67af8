"""``MetricsRecordLogger``: the Lightning logger that writes the run record (``ddpm_lab.run_record``) as
training logs: every value logged to any logger, appended to ``metrics.jsonl`` in the run dir."""

from __future__ import annotations

import json
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from ..run_record import HISTORY_FILE, write_summary


class MetricsRecordLogger(Logger):
    """A Lightning logger that appends every logged metric to ``<run_dir>/metrics.jsonl`` (rank 0 only)."""

    def __init__(self, save_dir: str | Path) -> None:
        super().__init__()
        self._save_dir = Path(save_dir)

    @property
    def name(self) -> str:
        return "metrics_record"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self._save_dir)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._save_dir.mkdir(parents=True, exist_ok=True)
        row = {"step": step, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
        with open(self._save_dir / HISTORY_FILE, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    @rank_zero_only
    def finalize(self, status: str) -> None:
        write_summary(self._save_dir)
