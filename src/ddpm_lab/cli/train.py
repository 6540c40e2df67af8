"""``ddpm-train``: train a diffusion model from the Hydra config in ``conf/`` (no overrides = the quickstart).

ddpm-train experiment=toy_swissroll
ddpm-train -m schedule=linear,cosine variance=fixed_small,learned_range loss=hybrid
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..lightning import read_summary, write_summary
from ..lightning.checkpointing import AtomicCheckpointIO
from . import CONFIG_DIR
from .builders import build_callbacks, build_datamodule, build_loggers, build_module
from .ddp_launch import DDPWorkers, needs_launch
from .validation import validate_config

log = logging.getLogger(__name__)
CHOICE_GROUPS = (
    "data",
    "model",
    "schedule",
    "variance",
    "loss",
    "parameterization",
    "sampler",
    "optimizer",
    "trainer",
    "experiment",
)


def config_choices(cfg: DictConfig) -> dict[str, Any]:
    """The config-group choices of this run (from Hydra when it runs the job), for records and leaderboards."""
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        return {group: choices.get(group) for group in CHOICE_GROUPS if group in choices}
    d = cfg.diffusion
    return {
        "schedule": d.get("schedule"),
        "variance": d.get("var_type"),
        "loss": d.get("loss_type"),
        "parameterization": d.get("mean_type"),
        "sampler": cfg.sampling.get("sampler"),
    }


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def wandb_fields(cfg: DictConfig) -> dict[str, Any]:
    """W&B run name/group/tags: in a multirun every job is its own run, grouped by sweep and tagged with its
    choices, so the W&B runs table is the online leaderboard."""
    choices = config_choices(cfg)
    tags = [*(cfg.get("tags") or []), *(f"{k}={v}" for k, v in choices.items() if v is not None)]
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep = Path(HydraConfig.get().sweep.dir).name
        return {"group": f"sweep-{sweep}", "name": f"{sweep}-{HydraConfig.get().job.num}", "tags": tags}
    return {"tags": tags}


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


def record_wandb_id(trainer: L.Trainer, run_dir: Path) -> None:
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            write_summary(run_dir, wandb_run_id=logger.experiment.id)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job; returns the run's metrics summary (rank 0) or {} (other ranks)."""
    run_dir = Path(cfg.paths.output_dir)
    rank_zero = is_rank_zero()
    started, success = time.time(), False
    if rank_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_summary(
            run_dir,
            status="running",
            choices=config_choices(cfg),
            tags=list(cfg.get("tags") or []),
            output_dir=str(run_dir),
            error=None,
        )
    try:
        validate_config(cfg)
    except Exception as err:
        if rank_zero:  # a run that never started is still on record, with the reason
            write_summary(run_dir, status="failed", error=f"{type(err).__name__}: {err}", wall_time_s=0.0)
        raise
    workers = DDPWorkers(cfg, run_dir) if needs_launch(cfg) else None
    resolved = OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    if rank_zero:
        (run_dir / "config_resolved.yaml").write_text(resolved)
    try:
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = build_datamodule(cfg)
        module = build_module(cfg, datamodule.sample_shape, run_config=resolved)
        fields = wandb_fields(cfg)
        previous_id = (read_summary(run_dir) or {}).get("wandb_run_id")
        if ckpt_path and previous_id and not cfg.get("logger", {}).get("wandb", {}).get("offline", True):
            fields.update(id=previous_id, resume="allow")  # online runs continue under the same id
        trainer: L.Trainer = hydra.utils.instantiate(
            cfg.trainer,
            logger=build_loggers(cfg, run_dir, fields),
            callbacks=build_callbacks(cfg),
            plugins=[AtomicCheckpointIO()],
        )
        if rank_zero:
            record_wandb_id(trainer, run_dir)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if module.nan_policy == "stop":
            module.check_finite()
        success = True
    except BaseException as err:
        if rank_zero:
            status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            write_summary(
                run_dir, status=status, error=f"{type(err).__name__}: {err}", wall_time_s=time.time() - started
            )
        raise
    finally:
        if workers is not None:
            workers.join(success)
        _finish_wandb()
        # The next job of a multirun must form its own process group with its own workers.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if not rank_zero:
        return {}
    return write_summary(
        run_dir,
        status="completed",
        global_step=trainer.global_step,
        world_size=trainer.world_size,
        wall_time_s=time.time() - started,
    )


def _finish_wandb() -> None:
    """Close this job's W&B run so that the next job of a multirun gets its own."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    summary = train(cfg)
    # A multirun sweeper (e.g. Optuna) minimises the returned value: the configured objective's final value.
    objective = cfg.get("objective")
    return (summary.get("final") or {}).get(objective) if objective else None


if __name__ == "__main__":
    main()
