"""Who a run is, for its record and the leaderboard: its config-group choices, its seed, and its arm (a
fingerprint of the config without the seed, so that runs differing only in seed are one arm)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

# Settings that say where and how a run is kept or shown, not what it trains: two runs that differ only in
# these (and the seed) are the same arm. Evaluation settings are the protocol's business (fid_protocol).
NOT_ARM = ("seed", "paths", "hydra", "logger", "callbacks", "metrics", "ckpt_path", "tags", "task_name", "objective")
CHOICE_GROUPS = (
    "data",
    "model",
    "schedule",
    "variance",
    "loss",
    "loss_weighting",
    "parameterization",
    "process",
    "conditioning",
    "sampler",
    "optimizer",
    "trainer",
    "experiment",
)


# What only the DDPM chain reads: left out of a continuous-time objective's choices (they do not apply to it).
DDPM_ONLY_CHOICES = (
    "schedule",
    "variance",
    "loss",
    "loss_weighting",
    "parameterization",
    "zero_terminal_snr",
    "offset_noise",
)


def config_choices(cfg: DictConfig) -> dict[str, Any]:
    """The config-group choices of this run (from Hydra when it runs the job), for records and leaderboards."""
    choices = _all_choices(cfg)
    if cfg.get("process"):  # edm / flow_matching
        return {k: v for k, v in choices.items() if k not in DDPM_ONLY_CHOICES}
    return choices


def _all_choices(cfg: DictConfig) -> dict[str, Any]:
    d = cfg.diffusion
    # Ablation axes that are values, not groups: the leaderboard shows them as columns where they vary.
    values = {"zero_terminal_snr": d.get("zero_terminal_snr", False), "offset_noise": d.get("offset_noise", 0.0)}
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        return {**{group: choices.get(group) for group in CHOICE_GROUPS if group in choices}, **values}
    return {
        "schedule": d.get("schedule"),
        "variance": d.get("var_type"),
        "loss": d.get("loss_type"),
        "loss_weighting": d.get("loss_weighting", "none"),
        "parameterization": d.get("mean_type"),
        "sampler": cfg.sampling.get("sampler"),
        **values,
    }


def wandb_fields(cfg: DictConfig) -> dict[str, Any]:
    """W&B run name/group/tags: in a multirun every job is its own run, grouped by sweep and tagged with its
    choices, so the W&B runs table is the online leaderboard."""
    choices = config_choices(cfg)
    tags = [*(cfg.get("tags") or []), *(f"{k}={v}" for k, v in choices.items() if v is not None)]
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep = Path(HydraConfig.get().sweep.dir).name
        return {"group": f"sweep-{sweep}", "name": f"{sweep}-{HydraConfig.get().job.num}", "tags": tags}
    return {"tags": tags}


def arm_fingerprint(cfg: DictConfig, leave_out: tuple[str, ...] = NOT_ARM) -> str:
    """sha256 (16 hex) of the unresolved config without ``leave_out``: interpolations such as
    ``${paths.output_dir}`` stay as written, so per-run directories do not make every run its own arm."""
    node = OmegaConf.to_container(cfg, resolve=False)
    kept = {k: v for k, v in node.items() if k not in leave_out}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def task_overrides(leave_out: tuple[str, ...] = ("seed",)) -> list[str]:
    """This job's command-line overrides without the seed (what tells arms apart in a table), [] outside Hydra."""
    if not HydraConfig.initialized():
        return []
    overrides = list(HydraConfig.get().overrides.task)
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in leave_out]


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The record fields that place a training run on the leaderboard."""
    return {
        "choices": config_choices(cfg),
        "seed": cfg.get("seed"),
        "arm": arm_fingerprint(cfg),
        "overrides": task_overrides(),
        "headline_metric": cfg.get("headline_metric"),  # what ddpm-leaderboard ranks by default
    }
