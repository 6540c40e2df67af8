"""Launching DDP worker processes for a Hydra job without the Hydra + Lightning DDP trap.

Lightning's own launcher re-runs ``sys.argv`` in each child, so with Hydra every child re-composes the config,
makes its own output dir and, in a multirun, re-runs the whole sweep. Here rank 0 (inside the Hydra job)
writes the job's fully resolved config into its run dir and starts ranks 1..N-1 as plain processes that read
it: no Hydra, no new dirs, no loggers of their own. Lightning sees LOCAL_RANK etc. in the environment and
treats the processes as externally launched (as under torchrun). SLURM and torchrun jobs are left alone.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .launch_env import OWN_LAUNCHER_ENV, RANK0_PID_ENV, detect_launch
from .resolvers import device_count

DDP_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")
ENV_KEYS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK", OWN_LAUNCHER_ENV)
WORKER_CONFIG = ".ddp_worker_config.yaml"


def write_worker_config(cfg: DictConfig, run_dir: Path) -> Path:
    """The job's fully resolved config, from which ranks > 0 train without running Hydra."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / WORKER_CONFIG
    OmegaConf.save(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)), path)
    return path


def processes_per_node(cfg: DictConfig) -> int:
    devices = cfg.trainer.get("devices", 1)
    if devices in (-1, "auto", "-1") and cfg.trainer.get("accelerator") == "gpu":
        import torch

        return max(torch.cuda.device_count(), 1)
    return device_count(devices)


def needs_launch(cfg: DictConfig) -> bool:
    strategy = cfg.trainer.get("strategy")
    return strategy in DDP_STRATEGIES and processes_per_node(cfg) > 1 and not detect_launch().has_rank


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DDPWorkers:
    """Starts ranks 1..N-1 and sets rank 0's environment; ``join()`` waits and restores the environment.

    ``on_worker_failure(message)`` runs when a worker dies, before this process exits: rank 0 may be blocked in
    a collective that would only time out after many minutes, so the watchdog ends the process itself, and
    the callback is the last chance to record why (the run's ``finally`` blocks do not run)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, on_worker_failure: Callable[[str], None] | None = None) -> None:
        num_nodes = int(cfg.trainer.get("num_nodes", 1) or 1)
        if num_nodes > 1:
            raise ValueError(
                f"trainer.num_nodes={num_nodes}: multi-node jobs must be started by SLURM (hydra/launcher=slurm) "
                "or torchrun on every node, which set the ranks; ddpm-train only launches the processes of one node."
            )
        self.num_processes = processes_per_node(cfg)
        self.saved_env = {k: os.environ.get(k) for k in ENV_KEYS}
        env = {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
            "WORLD_SIZE": str(self.num_processes),
            "NODE_RANK": "0",
            OWN_LAUNCHER_ENV: "1",
        }
        self.on_worker_failure = on_worker_failure
        config_path = write_worker_config(cfg, run_dir)
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "ddpm_lab.cli.ddp_worker", str(config_path)],
                env={**os.environ, **env, "LOCAL_RANK": str(rank), "RANK": str(rank), RANK0_PID_ENV: str(os.getpid())},
            )
            for rank in range(1, self.num_processes)
        ]
        os.environ.update({**env, "LOCAL_RANK": "0", "RANK": "0"})
        self._stop = threading.Event()  # set by join(), or by the watchdog when a worker dies
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        # A dead worker would leave rank 0 blocked in a collective until the gloo/NCCL timeout: fail fast.
        while not self._stop.is_set():
            for rank, proc in enumerate(self.procs, start=1):
                code = proc.poll()
                if code not in (None, 0) and not self._stop.is_set():  # not the workers join() itself kills
                    message = f"DDP rank {rank} exited with code {code}"
                    print(f"ddpm-train: {message}; stopping.", file=sys.stderr)
                    self._stop.set()
                    self.kill()
                    if self.on_worker_failure is not None:
                        try:
                            self.on_worker_failure(message)
                        except Exception as err:  # recording must not keep a dead job alive
                            print(f"ddpm-train: could not record the failure: {err}", file=sys.stderr)
                    os._exit(1)
            if all(proc.poll() == 0 for proc in self.procs):
                return
            self._stop.wait(0.5)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()

    def join(self, success: bool) -> None:
        self._stop.set()  # first, so the watchdog does not take the kills below for a crash
        if not success:
            self.kill()
        for proc in self.procs:
            proc.wait()
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
