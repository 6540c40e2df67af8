"""Checkpoint and requeue on SLURM's warning signal, so that a job stopped by its time limit or a pre-emption
loses no training: ``#SBATCH --signal=USR1@<seconds>`` (our sbatch template) or submitit's USR2 (``+launcher=slurm``)
reaches every task; at the next step boundary all ranks agree to stop, save ``checkpoints/last.ckpt`` at that
step (atomically, as every checkpoint), the record says ``requeued`` with the step and the signal, and the job is
requeued: by submitit's own handler when submitit runs the job, else by ``scontrol requeue $SLURM_JOB_ID`` from
rank 0. The requeued job continues in the same run dir (``cli.restarts``)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
# Under DDP the ranks agree every this many steps (one all-reduce, one host sync); alone, at every step.
DDP_CHECK_EVERY = 10


class Requeued(SystemExit):
    """This process stops because its job was checkpointed and requeued (exit status 0: not a failure)."""

    def __init__(self, message: str) -> None:
        super().__init__(0)
        self.message = message


class PreemptionCheckpoint(L.Callback):
    """Args:
    checkpoint_path: where to save (the run's last.ckpt, which ``ckpt_path=last`` resumes from).
    on_requeue: rank 0's ``(step, reason)`` hook, before the requeue (the run record).
    """

    def __init__(self, checkpoint_path: str | Path, on_requeue: Callable[[int, str], Any]) -> None:
        self.checkpoint_path = str(checkpoint_path)
        self.on_requeue = on_requeue
        self.received = 0
        self.previous: dict[int, Any] = {}
        self.pending: tuple[int, int] | None = None  # (signal, step) saved, to stop at the next hook

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = int(signum)  # only note it: the work happens at the next step boundary

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for signum in REQUEUE_SIGNALS:
            self.previous[signum] = signal.signal(signum, self._handle)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}

    def _agreed_signal(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        """The signal any rank received (0: none), the same on every rank."""
        if trainer.world_size == 1 or not torch.distributed.is_initialized():
            return self.received
        if trainer.global_step % DDP_CHECK_EVERY:
            return 0
        flag = torch.tensor([self.received], device=pl_module.device, dtype=torch.int64)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        """Save here, where the state is the step's (model, optimizer, data position, random streams); stop at
        the next hook, once Lightning has logged this step's metrics."""
        if self.pending:
            return
        signum = self._agreed_signal(trainer, pl_module)
        if not signum or trainer.global_step >= (trainer.max_steps if trainer.max_steps > 0 else float("inf")):
            return
        name = signal.Signals(signum).name
        step = trainer.global_step
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last:
                # last.ckpt is the checkpoint callback's own file: it overwrites it after the resume (rather than
                # writing last-v1.ckpt beside it, which ckpt_path=last would never read)
                callback.last_model_path = self.checkpoint_path
        trainer.save_checkpoint(self.checkpoint_path)  # every rank calls it; rank 0 writes
        reason = f"{name}: SLURM's warning before the time limit, or a pre-emption"
        if trainer.is_global_zero:
            self.on_requeue(step, reason)
            log.info(f"{name} received: saved {self.checkpoint_path} at step {step}; requeueing the job")
        self.pending = (signum, step)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._requeue_if_pending(trainer)

    def on_validation_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._requeue_if_pending(trainer)

    def _requeue_if_pending(self, trainer: L.Trainer) -> None:
        if not self.pending:
            return
        signum, step = self.pending
        name = signal.Signals(signum).name
        previous = self.previous.get(signum)
        self._restore()
        if callable(previous):  # submitit's handler: rank 0 requeues the job and exits, the others return
            previous(signum, None)
        elif trainer.is_global_zero and os.environ.get("SLURM_JOB_ID"):
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=True, timeout=60)
        raise Requeued(f"checkpointed at step {step} on {name} and requeued")
