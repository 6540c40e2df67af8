"""Turn a composed config into objects: the one place that knows how config groups map to code.

Used by every entry point (train, sample, eval) and by checkpoint loading, so a checkpoint rebuilt from its
stored config is the same network that was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from ..diffusion import GaussianDiffusion, ddpm_settings_conflict
from ..lightning import DiffusionModule, MetricsRecordLogger
from ..lightning.checkpointing import load_checkpoint
from .contracts import callback_nodes, check_datamodule, check_network_class


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The configured DataModule, checked against what training and the configured callbacks read of it."""
    datamodule = instantiate(cfg.data)
    check_datamodule(datamodule, [get_class(node._target_) for node in callback_nodes(cfg)])
    return datamodule


def process_node(cfg: DictConfig) -> DictConfig:
    """The node the objective is built from: ``process`` (edm, flow_matching) or, for DDPM (``process: null``,
    and configs stored before the process group existed), ``diffusion``."""
    return cfg.get("process") or cfg.diffusion


def is_ddpm(cfg: DictConfig) -> bool:
    return not cfg.get("process")


def build_diffusion(cfg: DictConfig):
    """The objective (``diffusion.objectives``): a GaussianDiffusion, EDMProcess or FlowMatchingProcess. A
    continuous-time one refuses DDPM settings it cannot honour (``ddpm_settings_conflict``)."""
    process = instantiate(process_node(cfg))
    conflict = ddpm_settings_conflict(process.objective, cfg.diffusion)
    if conflict:
        raise ValueError(conflict)
    return process


def build_module(
    cfg: DictConfig,
    sample_shape: tuple[int, ...],
    run_config: str | None = None,
    diffusion: GaussianDiffusion | None = None,
) -> DiffusionModule:
    """The DiffusionModule for data of ``sample_shape``: the network gets the data's shape and doubles its
    output channels when the variance is learned. ``diffusion``: one already built (start-up validation
    builds the module on the meta device, where the diffusion's float64 tables cannot be computed)."""
    diffusion = build_diffusion(cfg) if diffusion is None else diffusion
    network = build_network(cfg, sample_shape, diffusion.learned_variance)
    return module_factory(cfg)(
        network=network,
        diffusion=diffusion,
        optimizer=instantiate(cfg.optimizer),
        sample_shape=tuple(sample_shape),
        sampling=OmegaConf.to_container(cfg.sampling, resolve=True),
        run_config=run_config,
    )


def module_factory(cfg: DictConfig):
    """``module:`` as a partial DiffusionModule (every setting from the config, nothing restated here). A
    config stored by an older checkpoint has no ``_target_`` there: it gets the DiffusionModule's."""
    node = OmegaConf.to_container(cfg.module, resolve=True)
    node.setdefault("_target_", f"{DiffusionModule.__module__}.{DiffusionModule.__qualname__}")
    node["_partial_"] = True
    return instantiate(node)


def build_network(cfg: DictConfig, sample_shape: Sequence[int], learned_variance: bool) -> torch.nn.Module:
    """The configured network for data of ``sample_shape``; a class-conditional run (conditioning=class) gives
    it the data set's number of classes. Start-up validation calls this on the meta device."""
    conditional = bool(cfg.data.get("conditional"))
    check_network_class(get_class(cfg.model._target_), conditional)
    classes = {"num_classes": data_num_classes(cfg)} if conditional else {}
    return instantiate(cfg.model, sample_shape=list(sample_shape), learned_variance=learned_variance, **classes)


def data_num_classes(cfg: DictConfig) -> int | None:
    """The number of classes of the configured data set (None: it has no labels), from its class alone."""
    return getattr(get_class(cfg.data._target_), "num_classes", None)


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks group plus the metrics group's FID and NLL callbacks (where not null)."""
    callbacks = [instantiate(node) for node in callback_nodes(cfg)]
    if not (cfg.get("trainer") or {}).get("enable_progress_bar", True):  # Lightning refuses a bar it cannot show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def build_loggers(cfg: DictConfig, run_dir: Path, wandb_fields: dict[str, Any] | None = None) -> list:
    """The configured loggers plus the metrics record, which every run writes. ``wandb_fields`` (name, group,
    tags) are applied to a W&B logger on top of its config."""
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if node is None or "_target_" not in node:
            continue
        extra = {}
        if wandb_fields and issubclass(get_class(node["_target_"]), WandbLogger):
            extra = {
                **wandb_fields,
                "tags": list(dict.fromkeys([*(node.get("tags") or []), *wandb_fields.get("tags", [])])),
            }
        loggers.append(instantiate(node, **extra))
    return [*loggers, MetricsRecordLogger(run_dir)]


def module_from_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[DiffusionModule, DictConfig]:
    """Rebuild the DiffusionModule a checkpoint was trained with (config stored inside it) and load its weights."""
    checkpoint = load_checkpoint(path, map_location)
    stored = checkpoint.get("ddpm_lab", {}).get("config")
    if not stored:
        raise ValueError(f"{path} is not a ddpm-lab checkpoint: it carries no run config.")
    cfg = OmegaConf.create(stored)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.sample_shape, run_config=stored)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    return module, cfg
