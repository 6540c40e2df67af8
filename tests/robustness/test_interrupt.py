"""Ctrl-C (SIGINT to the job's process group, as a terminal sends it) is recorded as `interrupted`, not `failed`,
single process and DDP, and `ckpt_path=last` resumes the run. Lightning turns the KeyboardInterrupt into
SystemExit(1), which the record used to call "failed (SystemExit: 1)"."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.robustness.test_robustness import RESUME_RUN

pytestmark = pytest.mark.slow
SHORT = [*RESUME_RUN, "trainer.max_steps=8", "callbacks.model_checkpoint.every_n_train_steps=4"]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """ddpm-train in a session of its own, so that the SIGINT to its process group reaches no test process."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "ddpm_lab.cli.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )


@pytest.mark.parametrize("trainer", ["cpu", "ddp_cpu"])
def test_ctrl_c_is_recorded_as_interrupted_and_resumes(tmp_path, trainer):
    run_dir = tmp_path / "run"
    args = [f"hydra.run.dir={run_dir}", f"paths.root_dir={tmp_path}", f"trainer={trainer}", *SHORT]
    interrupt = [
        "+callbacks.interrupt._target_=tests.robustness.helpers.InterruptAtStep",
        "+callbacks.interrupt.step=6",
    ]
    stopped = run([*args, *interrupt], tmp_path)
    assert stopped.returncode != 0
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted", record.get("error")
    assert "KeyboardInterrupt" in record["error"] or "SystemExit" in record["error"]
    resumed = run([*args, "ckpt_path=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["global_step"] == 8
