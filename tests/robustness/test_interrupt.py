"""Ctrl-C (SIGINT to the job's process group, as a terminal sends it) is recorded as `interrupted`, not `failed`,
single process and DDP, and `ckpt_path=last` resumes the run. Lightning turns the KeyboardInterrupt into
SystemExit(1), which the record used to call "failed (SystemExit: 1)"."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from ddpm_lab.cli import builders
from ddpm_lab.cli.train import train
from tests.conftest import FAST_TRAINER, TINY_UNET, compose_config
from tests.robustness.test_robustness import RESUME_RUN

pytestmark = pytest.mark.slow
SHORT = [*RESUME_RUN, "trainer.max_steps=8", "callbacks.model_checkpoint.every_n_train_steps=4"]


def _default_sigint() -> None:
    # A suite started in the background (`make test &`, nohup) inherits SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler: the job would train through the Ctrl-C. A terminal's job has the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
        preexec_fn=_default_sigint,
    )


class CtrlC(L.Callback):
    """A KeyboardInterrupt at step 2, as Ctrl-C raises it in the main thread."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 2:
            raise KeyboardInterrupt


def test_ctrl_c_in_a_single_process_is_recorded_as_interrupted(tmp_path, monkeypatch):
    """In process: Lightning turns the KeyboardInterrupt into SystemExit(1); the record says interrupted."""
    real_build = builders.build_callbacks
    monkeypatch.setattr(builders, "build_callbacks", lambda cfg: [*real_build(cfg), CtrlC()])
    cfg = compose_config("train", tmp_path, [*FAST_TRAINER, *TINY_UNET, "logger=csv"])
    with pytest.raises(SystemExit):
        train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "interrupted" and "SystemExit" in record["error"]


def test_ctrl_c_under_ddp_is_recorded_as_interrupted_and_resumes(tmp_path):
    """SIGINT to the whole process group (rank 0 and its worker), as a terminal sends it."""
    run_dir = tmp_path / "run"
    args = [f"hydra.run.dir={run_dir}", f"paths.root_dir={tmp_path}", "trainer=ddp_cpu", *SHORT]
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
