"""Which engine started this process, and which rank it is: the one rank notion used everywhere.

Engines: ddpm-lab's own DDP launcher (``ddp_launch``), torchrun (2+ processes, 1+ nodes), SLURM tasks (``srun``
in an sbatch script, or the submitit launcher), or a single process. Records, W&B and pictures are written by
global rank 0 only, whichever engine it is.

Under torchrun and plain ``srun`` every rank runs ``ddpm-train`` from the top, so each would compose the config
and take its own timestamp (a run dir per rank when they start a second apart). Instead rank 0 runs the Hydra
job and publishes its resolved config in a rendezvous file (``<paths.log_dir>/.rendezvous/<launch key>.json``);
the other ranks wait for it and train from that config, in rank 0's run dir, without running Hydra at all. The
launch key is shared by all ranks of one launch and by no other (SLURM job and step id; torchrun's run id,
master address/port and restart count).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic_files import write_text_atomically

RENDEZVOUS_DIR = ".rendezvous"
# How long ranks > 0 wait for rank 0's config (Hydra start-up and validation take seconds; a slow shared
# file system may take longer).
RENDEZVOUS_TIMEOUT_S = float(os.environ.get("DDPM_LAB_RENDEZVOUS_TIMEOUT", "900"))
# ddpm-lab's own launcher marks its processes with this variable (rank 0 and the workers it starts).
OWN_LAUNCHER_ENV = "DDPM_LAB_LAUNCHER"
# ...and tells each worker rank 0's pid, so a worker notices rank 0's death (ddp_worker.watch_rank_zero).
RANK0_PID_ENV = "DDPM_LAB_RANK0_PID"


@dataclass(frozen=True)
class LaunchEnv:
    engine: str  # "single", "ddpm-lab", "torchrun", "slurm" or "env" (RANK set by something else)
    global_rank: int
    world_size: int
    local_world_size: int
    num_nodes: int
    key: str | None  # shared by every rank of this launch (torchrun, slurm)

    @property
    def is_rank_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def has_rank(self) -> bool:
        """The process already has a rank (torchrun, SLURM tasks, ddpm-lab's own workers, RANK set): ddpm-train
        starts no processes of its own. A one-task SLURM allocation has none: there it starts the node's."""
        return self.engine != "single"

    @property
    def started_by_engine(self) -> bool:
        """Several processes started by torchrun or SLURM, each running ddpm-train: ranks > 0 follow the config
        rank 0 publishes (``publish_rendezvous``), not Hydra."""
        return self.engine in ("torchrun", "slurm") and self.world_size > 1


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    # SLURM writes per-node counts like "2(x3)"; the first number is the count on this node.
    digits = value.split("(", 1)[0].split(",", 1)[0]
    return int(digits) if digits.strip().isdigit() else default


def slurm_manages_tasks() -> bool:
    """Several SLURM tasks in this job step (srun/sbatch --ntasks > 1), each one rank."""
    return "SLURM_PROCID" in os.environ and _int("SLURM_NTASKS", 1) > 1


def detect_launch() -> LaunchEnv:
    env = os.environ
    if env.get(OWN_LAUNCHER_ENV) == "1" and "RANK" in env:
        world = _int("WORLD_SIZE", 1)
        return LaunchEnv("ddpm-lab", _int("RANK", 0), world, world, 1, None)
    if "TORCHELASTIC_RUN_ID" in env:
        world, local = _int("WORLD_SIZE", 1), _int("LOCAL_WORLD_SIZE", 1)
        key = "torchrun-{}-{}-{}-{}".format(
            env.get("TORCHELASTIC_RUN_ID"),
            env.get("MASTER_ADDR", ""),
            env.get("MASTER_PORT", ""),
            env.get("TORCHELASTIC_RESTART_COUNT", "0"),
        )
        return LaunchEnv("torchrun", _int("RANK", 0), world, local, max(world // max(local, 1), 1), key)
    if slurm_manages_tasks():
        world = _int("SLURM_NTASKS", 1)
        nodes = _int("SLURM_NNODES", _int("SLURM_JOB_NUM_NODES", 1))
        local = _int("SLURM_NTASKS_PER_NODE", _int("SLURM_TASKS_PER_NODE", max(world // max(nodes, 1), 1)))
        key = f"slurm-{env.get('SLURM_JOB_ID', '')}.{env.get('SLURM_STEP_ID', '0')}"
        return LaunchEnv("slurm", _int("SLURM_PROCID", 0), world, local, nodes, key)
    if "RANK" in env or "LOCAL_RANK" in env:
        rank = _int("RANK", _int("LOCAL_RANK", 0))
        world = _int("WORLD_SIZE", 1)
        return LaunchEnv("env", rank, world, world, 1, None)
    return LaunchEnv("single", 0, 1, 1, 1, None)


def rendezvous_path(log_dir: str | Path, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return Path(log_dir) / RENDEZVOUS_DIR / f"{safe}.json"


def publish_rendezvous(path: Path, *, config: str | None = None, error: str | None = None) -> None:
    """Rank 0: tell the other ranks where the job's resolved config is (or why there is none)."""
    write_text_atomically(path, json.dumps({"config": config, "error": error, "time": time.time()}))


def wait_for_rank_zero(path: Path, started: float, timeout_s: float = RENDEZVOUS_TIMEOUT_S) -> str:
    """Ranks > 0: the path of rank 0's resolved config, once rank 0 has published it. A file older than this
    process (by more than a minute) is left over from an earlier launch and is not taken."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            payload = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            payload = None
        if payload is not None and payload.get("time", 0) >= started - 60:
            if payload.get("error"):
                raise RuntimeError(f"rank 0 stopped before training: {payload['error']}")
            return payload["config"]
        time.sleep(0.2)
    raise TimeoutError(
        f"rank {detect_launch().global_rank} waited {timeout_s:.0f} s for rank 0 to publish its config at {path}. "
        "Rank 0 must run with the same arguments and see the same paths.log_dir (a shared file system across nodes); "
        "set DDPM_LAB_RENDEZVOUS_TIMEOUT for a slower start."
    )
