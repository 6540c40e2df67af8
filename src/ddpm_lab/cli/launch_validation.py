"""Start-up check of a launch by an outside engine (torchrun, srun) against the trainer's DDP layout."""

from __future__ import annotations

from omegaconf import DictConfig

from .launch_env import LaunchEnv
from .validation import ConfigError


def validate_launch(cfg: DictConfig, launch: LaunchEnv) -> None:
    """Processes started by torchrun or SLURM must match the trainer's DDP layout, one process per device."""
    from .ddp_launch import DDP_STRATEGIES, processes_per_node

    if not launch.started_by_engine:
        return
    strategy = cfg.trainer.get("strategy")
    devices, nodes = processes_per_node(cfg), int(cfg.trainer.get("num_nodes") or 1)
    how = {
        "slurm": f"#SBATCH --nodes={nodes} --ntasks-per-node={devices} (one task per device)",
        "torchrun": f"torchrun --nnodes={nodes} --nproc-per-node={devices}",
    }[launch.engine]
    if strategy not in DDP_STRATEGIES:
        raise ConfigError(
            f"{launch.engine} started {launch.world_size} processes, but trainer.strategy={strategy}: each would "
            "train alone. Use trainer=ddp (GPUs) or trainer=ddp_cpu (gloo) with trainer.devices set to the "
            "processes per node, or start a single process."
        )
    if (launch.local_world_size, launch.num_nodes) != (devices, nodes):
        raise ConfigError(
            f"{launch.engine} started {launch.local_world_size} process(es) per node on {launch.num_nodes} node(s), "
            f"but the trainer asks for trainer.devices={devices} per node and trainer.num_nodes={nodes}. Start "
            f"them as {how}, or set trainer.devices={launch.local_world_size} "
            f"trainer.num_nodes={launch.num_nodes}."
        )


def validate_hardware(cfg: DictConfig) -> None:
    """The trainer's accelerator is on this machine (else Lightning's bare "No supported gpu backend found!"
    after start-up), and a warning where CPU processes outnumber the cores (each then crawls)."""
    import os
    import warnings

    import torch

    from .ddp_launch import processes_per_node

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} asks for a GPU, but this machine has none that torch can use "
            "(torch.cuda.is_available() is False). To run here on the CPU, add trainer=cpu, or keep the experiment's "
            "trainer and add trainer.accelerator=cpu trainer.precision=32-true (bf16 and 16-bit mixed precision are "
            "for GPUs)."
        )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if accelerator == "cpu" and processes_per_node(cfg) > cores:
        warnings.warn(
            f"trainer.devices={processes_per_node(cfg)} CPU processes on {cores} core(s): they share the cores and "
            f"each step takes several times longer; use trainer.devices={cores} or fewer.",
            stacklevel=2,
        )
