"""Jobs that are started again: a SLURM job requeued after its time-limit warning or a pre-emption, a torchrun
group restarted by ``--max-restarts``, a sweep launched again over its old sweep dir. Each continues in the run
dir of its first attempt, from that dir's last checkpoint (``ckpt_path: last``, the default), and its record
counts the restarts. What decides this is here; the signal that stops a job is ``lightning.preemption``.

Same run dir:
  sweep jobs (Hydra multirun, basic/joblib/submitit)  ``<hydra.sweep.dir>/<job num>``: the same on every launch
  sbatch / srun requeued                               rank 0 looks up the dir of SLURM_JOB_ID's first attempt
  torchrun --max-restarts                              rank 0 looks up the dir of TORCHELASTIC_RUN_ID's first attempt
The lookup is a small file per launch under ``<paths.log_dir>/.restarts/``, written by rank 0 when it starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..atomic_files import write_text_atomically
from ..run_record import read_summary
from .errors import ConfigError

RESTARTS_DIR = ".restarts"
# The config keys that may differ between the attempts of one job (how it is resumed, not what it trains).
NOT_COMPARED = ("ckpt_path",)


def persistent_launch_key() -> str | None:
    """What stays the same when an engine starts a job again: SLURM's job id (kept by ``scontrol requeue``),
    torchrun's run id (kept across ``--max-restarts``); None for a launch nothing restarts."""
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    return None


def restart_count() -> int:
    """How many times the engine has started this job before (0: the first attempt)."""
    for name in ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _lookup_file(log_dir: str | Path, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return Path(log_dir) / RESTARTS_DIR / f"{safe}.json"


def remember_run_dir(log_dir: str | Path, run_dir: Path) -> None:
    """Rank 0 of a restartable launch: note its run dir, for the attempts that follow."""
    key = persistent_launch_key()
    if key is not None and not _lookup_file(log_dir, key).exists():
        write_text_atomically(_lookup_file(log_dir, key), json.dumps({"run_dir": str(run_dir)}))


def first_attempt_run_dir(log_dir: str | Path) -> str | None:
    """On a restart (the engine's restart count > 0): the run dir of this launch's first attempt, if noted."""
    key = persistent_launch_key()
    if key is None or restart_count() == 0:
        return None
    try:
        return json.loads(_lookup_file(log_dir, key).read_text())["run_dir"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def config_differences(stored: Any, current: Any, prefix: str = "") -> list[str]:
    """``key: stored -> current`` for every leaf that differs between two configs (or sections of them, named
    by ``prefix``)."""
    if isinstance(stored, dict) and isinstance(current, dict):
        keys = sorted(set(stored) | set(current), key=str)
        return [
            d
            for k in keys
            for d in config_differences(stored.get(k), current.get(k), f"{prefix}.{k}" if prefix else str(k))
        ]
    return [] if stored == current else [f"{prefix}: {stored!r} -> {current!r}"]


def earlier_attempt(run_dir: Path, resolved: str) -> dict[str, Any] | None:
    """The record of an earlier attempt of this job in ``run_dir`` (None: a new job). Raises ConfigError when
    that attempt trained another config (e.g. a sweep launched again over its dir with other arms): the dir
    would mix two runs."""
    previous = read_summary(run_dir)
    stored_path = run_dir / "config_resolved.yaml"
    if previous is None or not stored_path.exists():
        return None
    stored, current = (
        OmegaConf.to_container(OmegaConf.load(stored_path)),
        OmegaConf.to_container(OmegaConf.create(resolved)),
    )
    for key in NOT_COMPARED:
        stored.pop(key, None)
        current.pop(key, None)
    changes = config_differences(stored, current)
    if changes:
        shown = "; ".join(changes[:8]) + (f"; ... ({len(changes)} in all)" if len(changes) > 8 else "")
        raise ConfigError(
            f"{run_dir} holds a run ({previous.get('status')}) trained with another config: {shown}. A job started "
            "again in its run dir must train the same config (a sweep launched again over its sweep dir must "
            "have the same arms). Launch the new config into a new dir (drop hydra.sweep.dir / hydra.run.dir), "
            "or restore the old settings."
        )
    return previous


def with_first_attempt_run_dir(args: list[str], log_dir: str | Path) -> list[str]:
    """The command line of a restarted rank 0 (sbatch requeue, torchrun restart), pointed at the run dir of the
    first attempt (unless the command names one itself)."""
    run_dir = first_attempt_run_dir(log_dir)
    if run_dir is None or any(arg.startswith("hydra.run.dir=") for arg in args):
        return args
    return [*args, f"hydra.run.dir={run_dir}"]


def join_restarted_torchrun_group(backend: str) -> None:
    """A torchrun restart (``--max-restarts``): form the default process group under a key prefix of its own
    attempt. torchrun keeps one store for all attempts (the rendezvous's shared TCPStore), so a plain
    ``env://`` init could read the first attempt's keys and connect to a dead rank (gloo: "connectFullMesh
    failed ... Connection refused", seen when one rank of the new attempt started late). Lightning then finds
    the group formed and uses it. No-op outside a torchrun restart or with a group already formed."""
    import datetime

    import torch.distributed as dist

    if "TORCHELASTIC_RUN_ID" not in os.environ or restart_count() == 0 or dist.is_initialized():
        return
    env = os.environ
    rank, world_size = int(env["RANK"]), int(env["WORLD_SIZE"])
    agent_store = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # the agent hosts it; every rank is a client
    timeout = datetime.timedelta(minutes=30)  # Lightning's default
    store = dist.TCPStore(
        env["MASTER_ADDR"],
        int(env["MASTER_PORT"]),
        world_size,
        is_master=not agent_store and rank == 0,
        timeout=timeout,
    )
    prefix = f"ddpm-lab/{env['TORCHELASTIC_RUN_ID']}/attempt-{restart_count()}/"
    dist.init_process_group(
        backend, store=dist.PrefixStore(prefix, store), rank=rank, world_size=world_size, timeout=timeout
    )
