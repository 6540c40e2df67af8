"""Start-up check of a launch by an outside engine (torchrun, srun) against the trainer's DDP layout."""

from __future__ import annotations

from omegaconf import DictConfig

from .launch_env import LaunchEnv
from .validation import ConfigError


def validate_launch(cfg: DictConfig, launch: LaunchEnv) -> None:
    """Processes started by torchrun or SLURM must match the trainer's DDP layout, one process per device."""
    from .ddp_launch import DDP_STRATEGIES, processes_per_node

    if not launch.external:
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
