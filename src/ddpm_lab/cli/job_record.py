"""A training job's run record (``metrics.json``), owned by one object: rank 0 writes it, every other rank only
reads; each status change of the job (running, failed, interrupted, completed) and each fact learned on the way
(W&B id, code version) goes through here. No Lightning import."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..run_record import write_summary
from .run_identity import run_identity


def interrupted(err: BaseException) -> bool:
    """Ctrl-C: a KeyboardInterrupt, or the SystemExit(1) Lightning raises after handling one (its context)."""
    return isinstance(err, KeyboardInterrupt) or (
        isinstance(err, SystemExit) and isinstance(err.__context__, KeyboardInterrupt)
    )


class JobRecord:
    """``run_dir/metrics.json`` of one training job; ``writes`` is False on ranks > 0 (every call is a no-op)."""

    def __init__(self, run_dir: Path, writes: bool) -> None:
        self.run_dir, self.writes, self.started = Path(run_dir), writes, time.time()

    def elapsed(self) -> float:
        return time.time() - self.started

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the record (none: recompute best/final from the history)."""
        return write_summary(self.run_dir, **fields) if self.writes else {}

    def running(self, cfg: DictConfig) -> None:
        if self.writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.update(
            status="running",
            **run_identity(cfg),
            tags=list(cfg.get("tags") or []),
            output_dir=str(self.run_dir),
            error=None,
        )

    def refused(self, err: BaseException) -> None:
        """Start-up validation failed: a run that never started is still on record, with the reason."""
        self.update(status="failed", error=f"{type(err).__name__}: {err}", wall_time_s=0.0)

    def failed(self, message: str) -> None:
        self.update(status="failed", error=message, wall_time_s=self.elapsed())

    def ended_by(self, err: BaseException) -> None:
        """The job stopped on ``err``: Ctrl-C is ``interrupted`` (resumable with ckpt_path=last), else ``failed``."""
        status = "interrupted" if interrupted(err) else "failed"
        self.update(status=status, error=f"{type(err).__name__}: {err}", wall_time_s=self.elapsed())

    def completed(self, global_step: int, world_size: int) -> dict[str, Any]:
        return self.update(
            status="completed", global_step=global_step, world_size=world_size, wall_time_s=self.elapsed()
        )
