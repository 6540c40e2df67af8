"""Entry point of DDP ranks > 0 started by ``ddp_launch``: run the job from rank 0's resolved config.

Rank 0 is the process that records the run. If it dies without a word (SIGKILL, the OOM killer), this rank
would sit in a collective until the timeout and then print a long gloo/NCCL traceback, and metrics.json would
say "running" for ever; so a watch thread notices rank 0's death, records it and ends this rank at once.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from omegaconf import OmegaConf

from .launch_env import RANK0_PID_ENV


def rank_zero_alive(pid: int) -> bool:
    from ..atomic_files import process_alive

    # A dead parent's children are re-parented, so a reused pid is not taken for rank 0.
    return process_alive(pid) and os.getppid() == pid


def watch_rank_zero(pid: int, run_dir: Path, interval: float = 0.5) -> None:
    """Poll rank 0; once it is gone, mark a still-running record failed and end this process."""
    from ..run_record import read_summary, write_summary

    while rank_zero_alive(pid):
        time.sleep(interval)
    message = f"DDP rank 0 (pid {pid}) died without recording why (killed, e.g. by SIGKILL or the OOM killer)"
    if (read_summary(run_dir) or {}).get("status") == "running":
        write_summary(run_dir, status="failed", error=message)
    print(f"ddpm-train: {message}; rank {os.environ.get('RANK', '?')} stops.", file=sys.stderr)
    os._exit(1)


def main() -> None:
    from .train import train

    cfg = OmegaConf.load(sys.argv[1])
    if os.environ.get(RANK0_PID_ENV, "").isdigit():
        pid, run_dir = int(os.environ[RANK0_PID_ENV]), Path(cfg.paths.output_dir)
        threading.Thread(target=watch_rank_zero, args=(pid, run_dir), daemon=True).start()
    train(cfg)


if __name__ == "__main__":
    main()
