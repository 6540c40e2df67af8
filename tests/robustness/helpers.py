"""Callbacks the robustness tests inject through the command line (+callbacks.NAME._target_=...)."""

import os
import signal
import time

import lightning as L


class KillAtStep(L.Callback):
    """SIGKILL this process when batch ``step`` + 1 is about to start (after step ``step``'s checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class InterruptAtStep(L.Callback):
    """Ctrl-C at ``step``: rank 0 sends SIGINT to its whole process group, as a terminal does (run the job in a
    session of its own)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank == 0:
            os.killpg(os.getpgid(0), signal.SIGINT)
            time.sleep(5)  # the signal arrives as KeyboardInterrupt while this waits


class PoisonBatch(L.Callback):
    """Fill the given batches (by index in the first epoch) with NaN: a corrupted sample reaching the model."""

    def __init__(self, batches: list[int]) -> None:
        self.batches = set(batches)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0 and batch_idx in self.batches:
            batch.fill_(float("nan"))


class FailOnRankZero(L.Callback):
    """Raise on global rank 0 only, at ``step``: a crash of the process that owns the run dir."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == 0 and trainer.global_step == self.step:
            raise RuntimeError(f"injected failure on rank 0 at step {self.step}")


class ExitOnRank(L.Callback):
    """End global rank ``rank`` abruptly (os._exit, no cleanup) at ``step``: a worker killed mid-run. The other
    ranks sleep ``others_sleep`` seconds at that step (outside any collective), so that the launcher's
    watchdog, not a collective's error, is what notices the death."""

    def __init__(self, rank: int, step: int, code: int = 3, others_sleep: float = 0.0) -> None:
        self.rank, self.step, self.code, self.others_sleep = rank, step, code, others_sleep

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        if trainer.global_rank == self.rank:
            os._exit(self.code)
        time.sleep(self.others_sleep)


class RecordRandomState(L.Callback):
    """Write, per rank, a digest of the torch RNG state at each training batch start (where the step's t, eps
    and dropout masks are drawn from) to ``<dir>/rng_rank<R>.json``."""

    def __init__(self, dir: str) -> None:
        self.dir, self.digests = dir, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import hashlib

        import torch

        self.digests[trainer.global_step] = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()

    def on_train_end(self, trainer, pl_module) -> None:
        import json
        from pathlib import Path

        Path(self.dir).mkdir(parents=True, exist_ok=True)
        (Path(self.dir) / f"rng_rank{trainer.global_rank}.json").write_text(json.dumps(self.digests))


class RecordValidationItems(L.Callback):
    """Write, per rank, the split indices of the items each validation pass evaluated (``<dir>/val_rank<R>.json``;
    -1 for items of a loader that does not say their index)."""

    def __init__(self, dir: str) -> None:
        self.dir, self.items = dir, []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(batch, list | tuple):
            self.items += [int(i) for i in batch[1]]
        else:
            self.items += [-1] * len(batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        import json
        from pathlib import Path

        Path(self.dir).mkdir(parents=True, exist_ok=True)
        (Path(self.dir) / f"val_rank{trainer.global_rank}.json").write_text(json.dumps(self.items))
        self.items = []


class KillOnceAtStep(L.Callback):
    """SIGKILL at ``step`` in a run that started from scratch (not in the attempt that resumes), on global rank
    ``rank`` (None: every rank) of sweep job ``job`` (None: any job): a job that dies once and is started again."""

    def __init__(self, step: int, rank: int | None = None, job: int | None = None) -> None:
        self.step, self.rank, self.job = step, rank, job

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        from hydra.core.hydra_config import HydraConfig

        job = HydraConfig.get().job.get("num") if HydraConfig.initialized() else None
        if (
            trainer.global_step == self.step
            and trainer.ckpt_path is None
            and self.rank in (None, trainer.global_rank)
            and self.job in (None, job)
        ):
            os.kill(os.getpid(), signal.SIGKILL)


class SlurmSignalOnceAtStep(L.Callback):
    """At ``step`` of a job's first attempt, rank 0 asks SLURM to send ``signal`` to every task of its job
    (``scancel --signal``): what SLURM does ``--signal``'s lead time before the time limit, or at a pre-emption.
    Only in sweep job ``job`` (None: any)."""

    def __init__(self, step: int, signal: str = "USR1", job: int | None = None) -> None:
        self.step, self.signal, self.job = step, signal, job

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import subprocess

        from hydra.core.hydra_config import HydraConfig

        job = HydraConfig.get().job.get("num") if HydraConfig.initialized() else None
        first_attempt = os.environ.get("SLURM_RESTART_COUNT", "0") == "0" and trainer.ckpt_path is None
        if trainer.global_step == self.step and first_attempt and trainer.global_rank == 0 and self.job in (None, job):
            subprocess.run(["scancel", f"--signal={self.signal}", os.environ["SLURM_JOB_ID"]], check=True)
            time.sleep(2)  # the signal reaches every task while this waits


class SignalSelfOnceAtStep(L.Callback):
    """At ``step`` of a run that started from scratch, send ``signal`` to this process (every rank: as SLURM's
    ``--signal`` reaches every task)."""

    def __init__(self, step: int, signal: str = "USR1") -> None:
        self.step, self.signal = step, signal

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.ckpt_path is None:
            os.kill(os.getpid(), getattr(signal, f"SIG{self.signal}"))
