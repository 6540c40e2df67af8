"""``ddpm-train``: train a diffusion model from the Hydra config in ``conf/`` (no overrides = the quickstart).

``train()`` is a short sequence of named steps: record the job as running, validate at start-up, start the DDP
workers, build the job (data, module, resume), build the trainer, fit, record the outcome (``JobRecord`` owns
``metrics.json``).

ddpm-train experiment=toy_swissroll
ddpm-train -m schedule=linear,cosine +variance_loss=fixed_small_mse,learned_range_hybrid
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..atomic_files import write_text_atomically
from ..run_record import read_summary, truncate_history
from . import CONFIG_DIR
from .command_line import log_dir_of
from .common import answer_version, report_config_errors
from .errors import ConfigError
from .job_record import JobRecord
from .launch_env import LaunchEnv, detect_launch, publish_rendezvous, rendezvous_path, wait_for_rank_zero
from .restarts import (
    earlier_attempt,
    join_restarted_torchrun_group,
    remember_run_dir,
    restart_count,
    with_first_attempt_run_dir,
)
from .run_identity import wandb_fields

# Lightning, torch and the builders are imported inside the steps of train(): `ddpm-train --help`, `--cfg job`
# and a sweep's launch answer without them (Lightning alone takes 5-10 s to import).

log = logging.getLogger(__name__)
# Ranks > 0 accept only a rendezvous file written after they started (less a margin): see launch_env.
PROCESS_START = time.time()


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``last`` means this run dir's checkpoints/last.ckpt (a fresh start if there is none yet, so a job script
    can always pass ckpt_path=last); anything else must exist."""
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.exists():
            log.info(f"ckpt_path=last: no {last} yet, starting from scratch")
            return None
        return str(last)
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist (use a checkpoint file or ckpt_path=last).")
    return str(ckpt_path)


def cluster_environment(launch: LaunchEnv) -> list:
    """Lightning's cluster environment for the engine that started this process, named explicitly: inside a
    one-task SLURM allocation Lightning would otherwise take SLURM's view (rank 0 of 1) over ddpm-lab's own
    launcher and every process would be rank 0; and a SLURM job named "bash" would not be detected at all."""
    from lightning.pytorch.plugins.environments import (
        LightningEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    environments = {
        "ddpm-lab": LightningEnvironment,
        "torchrun": TorchElasticEnvironment,
        # SLURM's warning signal is ddpm-lab's (lightning.preemption: last.ckpt in the run dir, the record, the
        # same run dir after the requeue), not Lightning's auto-requeue (an hpc_ckpt file, a new run dir).
        "slurm": lambda: SLURMEnvironment(auto_requeue=False),
    }
    return [environments[launch.engine]()] if launch.engine in environments else []


def rendezvous_file(cfg: DictConfig, launch: LaunchEnv) -> Path | None:
    """Where rank 0 of a torchrun/srun launch publishes its config for the other ranks (None: nobody waits,
    e.g. one process, or a submitit sweep job where every task is a Hydra job with the same run dir)."""
    if not (launch.started_by_engine and launch.is_rank_zero and launch.key):
        return None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return None
    return rendezvous_path(cfg.paths.log_dir, launch.key)


def process_group_backend(trainer) -> str:
    """The backend Lightning would form the process group with: the strategy's, else nccl on CUDA, gloo else."""
    chosen = getattr(trainer.strategy, "process_group_backend", None)
    return chosen or ("nccl" if trainer.strategy.root_device.type == "cuda" else "gloo")


def _finish_wandb_within(seconds: float) -> None:
    """Finish W&B from the watchdog thread without letting a stuck flush keep a dead job alive."""
    thread = threading.Thread(target=_finish_wandb, kwargs={"exit_code": 1}, daemon=True)
    thread.start()
    thread.join(seconds)


def validate_at_start_up(cfg: DictConfig, launch: LaunchEnv, record: JobRecord, rendezvous: Path | None) -> None:
    """Every start-up check, before any heavy import; a refusal is recorded and told to the waiting ranks."""
    from .launch_validation import validate_hardware, validate_launch
    from .validation import validate_config

    try:
        validate_hardware(cfg)
        validate_config(cfg)
        validate_launch(cfg, launch)
    except Exception as err:
        record.refused(err)
        if rendezvous is not None:  # the waiting ranks stop now, with the same reason
            publish_rendezvous(rendezvous, error=f"{type(err).__name__}: {err}")
        raise


def build_job(cfg: DictConfig, record: JobRecord, resolved: str):
    """The DataModule, the module and the checkpoint to resume from (its rolled-back history dropped)."""
    import lightning as L

    from ..atomic_files import remove_stale_temp_files
    from .builders import build_datamodule, build_module
    from .checkpoint_validation import validate_resume

    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), record.run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.sample_shape, run_config=resolved)
    if record.writes:
        remove_stale_temp_files(record.run_dir / "checkpoints")
    if ckpt_path:
        step = validate_resume(module, ckpt_path)
        if record.writes and truncate_history(record.run_dir, step):
            record.update()  # best/final again, from the steps that stand
        record.resumed_from(step)
    return datamodule, module, ckpt_path


def build_trainer(cfg: DictConfig, record: JobRecord, resolved: str, resuming: bool):
    """The Trainer with the run's loggers (W&B resumed under its id), callbacks and checkpoint IO; the
    W&B id, the code version and the whole resolved config go on record."""
    from lightning.pytorch.loggers import WandbLogger

    from ..lightning.checkpointing import AtomicCheckpointIO
    from ..lightning.preemption import PreemptionCheckpoint
    from ..provenance import code_provenance
    from .builders import build_callbacks, build_loggers

    fields = wandb_fields(cfg)
    previous_id = (read_summary(record.run_dir) or {}).get("wandb_run_id")
    if resuming and previous_id:
        # The same W&B run: online it continues; offline each attempt writes a local run dir under the same id,
        # which `wandb sync` uploads as one run.
        fields.update(id=previous_id, resume="allow")
    # Under SLURM: checkpoint and requeue on the time-limit warning or a pre-emption (lightning.preemption).
    preemption = (
        [PreemptionCheckpoint(record.run_dir / "checkpoints" / "last.ckpt", on_requeue=record.requeued)]
        if os.environ.get("SLURM_JOB_ID")
        else []
    )
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=build_loggers(cfg, record.run_dir, fields),
        callbacks=[*build_callbacks(cfg), *preemption],
        # Detected again: DDPWorkers (started before) has made this process rank 0 of ddpm-lab's own launcher.
        plugins=[AtomicCheckpointIO(), *cluster_environment(detect_launch())],
    )
    if record.writes:
        code = code_provenance(trainer.strategy.root_device)  # which code and device made these numbers
        wandb_ids = [logger.experiment.id for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        record.update(code=code, **({"wandb_run_id": wandb_ids[0]} if wandb_ids else {}))
        # The whole resolved config, so W&B's runs table can filter and group by any setting (lr, T, EMA...);
        # the module saves no hyperparameters of its own, so Lightning would log none.
        for logger in trainer.loggers:
            logger.log_hyperparams({**OmegaConf.to_container(OmegaConf.create(resolved)), "code": code})
    return trainer


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def earlier_attempt_in(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The record of an earlier attempt of this job in its run dir (a requeue, a torchrun restart, a sweep
    launched again over its dir); None for a new run dir. A sweep job's is checked to have trained the same
    config (a single run resumed in its dir may change settings, e.g. train on to more steps)."""
    previous = read_summary(run_dir)
    if previous is None or not is_multirun():
        return previous
    return earlier_attempt(run_dir, OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))))


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job; returns the run's metrics summary (rank 0) or {} (other ranks). A job whose run
    dir holds a completed run of the same config is not trained again (its record is returned); one that
    stopped before completing resumes from the dir's last checkpoint (``ckpt_path: last``)."""
    launch = detect_launch()
    record = JobRecord(Path(cfg.paths.output_dir), writes=launch.is_rank_zero)
    rendezvous = rendezvous_file(cfg, launch)
    try:  # before anything is written: the old record stands. Rank 0 judges; the others only read its status.
        earlier = earlier_attempt_in(cfg, record.run_dir) if record.writes else read_summary(record.run_dir)
    except ConfigError as err:
        if rendezvous is not None:
            publish_rendezvous(rendezvous, error=f"{type(err).__name__}: {err}")
        raise
    if is_multirun() and earlier is not None and earlier.get("status") == "completed":
        log.info(f"{record.run_dir} holds this job, completed at step {earlier.get('global_step')}: not trained again")
        print(f"ddpm-train: {record.run_dir} already completed; not trained again", file=sys.stderr)
        return earlier if record.writes else {}
    record.running(cfg, earlier if earlier is not None and earlier.get("status") != "completed" else None)
    validate_at_start_up(cfg, launch, record, rendezvous)
    if record.writes and not is_multirun():
        remember_run_dir(cfg.paths.log_dir, record.run_dir)  # a requeued/restarted launch finds it again
    # Only now the heavy imports: a config error above has answered without Lightning.
    import torch

    from .ddp_launch import DDPWorkers, needs_launch, write_worker_config

    if rendezvous is not None:
        publish_rendezvous(rendezvous, config=str(write_worker_config(cfg, record.run_dir)))

    def record_worker_failure(message: str) -> None:
        record.failed(message)
        _finish_wandb_within(20.0)

    workers = DDPWorkers(cfg, record.run_dir, on_worker_failure=record_worker_failure) if needs_launch(cfg) else None
    resolved = OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    if record.writes:  # atomically: the ranks of a restarted job compare their config with it
        write_text_atomically(record.run_dir / "config_resolved.yaml", resolved)
    success = False
    try:
        datamodule, module, ckpt_path = build_job(cfg, record, resolved)
        trainer = build_trainer(cfg, record, resolved, resuming=bool(ckpt_path))
        if launch.engine == "torchrun" and trainer.world_size > 1:
            join_restarted_torchrun_group(process_group_backend(trainer))
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if module.nan_policy == "stop":
            module.check_finite()
        success = True
    except BaseException as err:
        record.ended_by(err)
        raise
    finally:
        if workers is not None:
            workers.join(success)
        _finish_wandb()
        # The next job of a multirun must form its own process group with its own workers.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if not record.writes:
        return {}
    if rendezvous is not None:
        rendezvous.unlink(missing_ok=True)  # every rank has joined the process group, so read it
    summary = record.completed(trainer.global_step, trainer.world_size)
    # In the run dir's train.log too (with Lightning's messages), which Hydra writes for every job.
    log.info(f"completed at step {trainer.global_step} in {summary['wall_time_s']:.0f} s; run dir {record.run_dir}")
    print(f"ddpm-train: run dir {record.run_dir}", file=sys.stderr)
    return summary


def _finish_wandb(exit_code: int | None = None) -> None:
    """Close this job's W&B run so that the next job of a multirun gets its own."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=exit_code)


@report_config_errors("ddpm-train")
def run_job(cfg: DictConfig) -> float | None:
    """The Hydra task: train, and return the final value of ``objective`` (what a sweeper such as Optuna
    minimises). A job that was asked for an objective it never logged fails, naming what it did log."""
    summary = train(cfg)
    objective = cfg.get("objective")
    if not objective or not summary:  # no objective asked for, or a rank > 0
        return None
    final = summary.get("final") or {}
    if objective not in final:
        raise ConfigError(
            f"objective={objective} was never logged by this run; it logged: {', '.join(sorted(final))}. "
            "Set objective= to one of these (for 2-D data: val/sample_distance)."
        )
    return final[objective]


hydra_main = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")(run_job)


def rank_zero_config(launch: LaunchEnv, args: list[str]) -> DictConfig:
    """A rank > 0 under torchrun or srun: rank 0's resolved config (its run dir included), once published."""
    if any(arg in ("-m", "--multirun") for arg in args):
        raise ConfigError(
            f"ddpm-train -m was started as {launch.world_size} {launch.engine} processes: a sweep is launched by "
            "Hydra, one job at a time, not by several processes at once. Run `ddpm-train -m ... +launcher=slurm` "
            "from a login node (each job then gets its own SLURM tasks), or launch single runs under "
            "torchrun/srun."
        )
    # Only to find paths.log_dir, where rank 0 publishes: no run dir, no timestamp, nothing written.
    return OmegaConf.load(wait_for_rank_zero(rendezvous_path(log_dir_of(args), launch.key), PROCESS_START))


def main() -> None:
    """``ddpm-train``: the Hydra app on rank 0 (and in single-process runs); ranks > 0 of a torchrun or srun
    launch follow rank 0 instead of running Hydra themselves (one run dir per job, whatever the engine)."""
    answer_version("ddpm-train")
    launch = detect_launch()
    if launch.started_by_engine and not launch.is_rank_zero:
        try:
            cfg = rank_zero_config(launch, sys.argv[1:])
        except (ConfigError, RuntimeError, TimeoutError) as err:
            print(f"ddpm-train (rank {launch.global_rank}): {err}", file=sys.stderr)
            raise SystemExit(1) from None
        train(cfg)
        return
    if launch.is_rank_zero and restart_count() > 0 and not any(a in ("-m", "--multirun") for a in sys.argv[1:]):
        # A requeued SLURM job or a restarted torchrun group: continue in the first attempt's run dir.
        sys.argv = [sys.argv[0], *with_first_attempt_run_dir(sys.argv[1:], log_dir_of(sys.argv[1:]))]
    hydra_main()


if __name__ == "__main__":
    main()
