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
    """Stopped from outside, resumable: Ctrl-C (a KeyboardInterrupt, or the SystemExit(1) Lightning raises after
    handling one) or SIGTERM (scancel, a pre-emption: Lightning's SIGTERMException)."""
    return (
        isinstance(err, KeyboardInterrupt)
        or (isinstance(err, SystemExit) and isinstance(err.__context__, KeyboardInterrupt))
        or type(err).__name__ == "SIGTERMException"
    )


def stop_reason(previous: dict[str, Any]) -> str:
    """Why an earlier attempt of a job stopped, from its record."""
    status = previous.get("status")
    if status == "running":
        return "the process died without a word on record (SIGKILL, a node failure, or a torchrun restart)"
    return f"{status}: {previous.get('error') or previous.get('stop_reason') or 'no reason given'}"


class JobRecord:
    """``run_dir/metrics.json`` of one training job; ``writes`` is False on ranks > 0 (every call is a no-op)."""

    def __init__(self, run_dir: Path, writes: bool) -> None:
        self.run_dir, self.writes, self.started = Path(run_dir), writes, time.time()
        self.requeued_at: int | None = None

    def elapsed(self) -> float:
        return time.time() - self.started

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the record (none: recompute best/final from the history)."""
        return write_summary(self.run_dir, **fields) if self.writes else {}

    def running(self, cfg: DictConfig, earlier: dict[str, Any] | None = None) -> None:
        """The job starts; ``earlier``: the record of an earlier attempt in this run dir that did not complete
        (this start is a restart: counted, with why and where the earlier attempt stopped)."""
        if self.writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        restarts = {}
        if earlier is not None:
            # known when the attempt stopped itself (a requeue); a killed one left no word (null)
            stopped = earlier.get("stopped_at_step")
            entry = {"reason": stop_reason(earlier), "stopped_at_step": stopped, "resumed_from_step": None}
            log = [*(earlier.get("restart_log") or []), entry]
            restarts = {"restarts": len(log), "restart_log": log}
        self.update(
            status="running",
            **run_identity(cfg),
            tags=list(cfg.get("tags") or []),
            output_dir=str(self.run_dir),
            error=None,
            stopped_at_step=None,
            stop_reason=None,
            **restarts,
        )

    def resumed_from(self, step: int) -> None:
        """The checkpoint this attempt resumes from (the restart's entry in the log)."""
        if not self.writes:
            return
        from ..run_record import read_summary

        log = (read_summary(self.run_dir) or {}).get("restart_log") or []
        if log and log[-1].get("resumed_from_step") is None:
            log[-1]["resumed_from_step"] = step
            self.update(restart_log=log)

    def requeued(self, step: int, reason: str) -> None:
        """Checkpointed at ``step`` and requeued (``lightning.preemption``): the next attempt resumes here."""
        self.requeued_at = step
        self.update(status="requeued", stopped_at_step=step, stop_reason=reason, wall_time_s=self.elapsed())

    def refused(self, err: BaseException) -> None:
        """Start-up validation failed: a run that never started is still on record, with the reason."""
        self.update(status="failed", error=f"{type(err).__name__}: {err}", wall_time_s=0.0)

    def failed(self, message: str) -> None:
        self.update(status="failed", error=message, wall_time_s=self.elapsed())

    def ended_by(self, err: BaseException) -> None:
        """The job stopped on ``err``: Ctrl-C or SIGTERM is ``interrupted`` (resumable with ckpt_path=last), else
        ``failed``; a job that was checkpointed and requeued keeps that status."""
        if self.requeued_at is not None:
            return
        status = "interrupted" if interrupted(err) else "failed"
        self.update(status=status, error=f"{type(err).__name__}: {err}", wall_time_s=self.elapsed())

    def completed(self, global_step: int, world_size: int) -> dict[str, Any]:
        return self.update(
            status="completed", global_step=global_step, world_size=world_size, wall_time_s=self.elapsed()
        )
