"""One rank notion for every engine, and the start-up check of a launch against the trainer."""

from __future__ import annotations

import json
import time

import pytest

from ddpm_lab.cli.launch_env import detect_launch, publish_rendezvous, rendezvous_path, wait_for_rank_zero
from ddpm_lab.cli.launch_validation import validate_launch
from ddpm_lab.cli.validation import ConfigError
from tests.conftest import FAST_TRAINER, TINY_UNET, compose_config, run_train_cli

ENGINE_VARS = (
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT",
    "TORCHELASTIC_RESTART_COUNT", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_NNODES", "SLURM_NTASKS_PER_NODE",
    "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_JOB_ID", "SLURM_STEP_ID", "DDPM_LAB_LAUNCHER",
)  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENGINE_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def set_env(monkeypatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_single_process(clean_env):
    launch = detect_launch()
    assert (launch.engine, launch.global_rank, launch.world_size, launch.started_by_engine) == ("single", 0, 1, False)


def test_srun_task_one_is_not_rank_zero(clean_env):
    """The bug: RANK/LOCAL_RANK only, so under srun --ntasks-per-node=2 both tasks were rank 0."""
    set_env(
        clean_env,
        SLURM_PROCID="1",
        SLURM_NTASKS="2",
        SLURM_NNODES="1",
        SLURM_JOB_ID="77",
        SLURM_STEP_ID="0",
        SLURM_TASKS_PER_NODE="2",
    )
    launch = detect_launch()
    assert (launch.engine, launch.global_rank, launch.world_size, launch.local_world_size) == ("slurm", 1, 2, 2)
    assert not launch.is_rank_zero and launch.started_by_engine and launch.key == "slurm-77.0"


def test_per_node_counts_in_slurm_format(clean_env):
    set_env(clean_env, SLURM_PROCID="3", SLURM_NTASKS="4", SLURM_NNODES="2", SLURM_TASKS_PER_NODE="2(x2)")
    launch = detect_launch()
    assert (launch.local_world_size, launch.num_nodes, launch.global_rank) == (2, 2, 3)


def test_one_task_allocation_is_single(clean_env):
    """A one-task SLURM allocation: ddpm-train launches the node's ranks itself."""
    clean_env.setenv("SLURM_PROCID", "0")
    clean_env.setenv("SLURM_NTASKS", "1")
    assert detect_launch().engine == "single"
    clean_env.setenv("DDPM_LAB_LAUNCHER", "1")  # ... and its workers know they are its ranks
    clean_env.setenv("RANK", "1")
    clean_env.setenv("WORLD_SIZE", "2")
    launch = detect_launch()
    assert (launch.engine, launch.global_rank, launch.world_size) == ("ddpm-lab", 1, 2)


def test_torchrun_two_nodes(clean_env):
    set_env(
        clean_env,
        TORCHELASTIC_RUN_ID="none",
        RANK="1",
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT="29533",
    )
    launch = detect_launch()
    assert (launch.engine, launch.global_rank, launch.num_nodes, launch.local_world_size) == ("torchrun", 1, 2, 1)
    assert launch.key == "torchrun-none-127.0.0.1-29533-0"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer=cpu"], "slurm started 4 processes, but trainer.strategy=None: each would train alone"),
        (["trainer=ddp_cpu"], r"2 process\(es\) per node on 2 node\(s\), but the trainer asks for trainer.devices=2 "
                              r"per node and trainer.num_nodes=1. Start them as #SBATCH --nodes=1 --ntasks-per-node=2"),
        (["trainer=ddp_cpu", "trainer.num_nodes=2"], None),
    ],
)  # fmt: skip
def test_launch_must_match_the_trainer(clean_env, tmp_path, overrides, message):
    set_env(clean_env, SLURM_PROCID="0", SLURM_NTASKS="4", SLURM_NNODES="2", SLURM_TASKS_PER_NODE="2(x2)")
    cfg = compose_config("train", tmp_path, overrides)
    if message is None:
        validate_launch(cfg, detect_launch())
    else:
        with pytest.raises(ConfigError, match=message):
            validate_launch(cfg, detect_launch())


def test_rendezvous_ignores_a_stale_file_and_passes_rank_zero_errors(tmp_path):
    path = rendezvous_path(tmp_path, "slurm-9.0")
    publish_rendezvous(path, config="/old/config.yaml")
    payload = json.loads(path.read_text())
    payload["time"] -= 3600  # left over from an earlier launch with the same key
    path.write_text(json.dumps(payload))
    with pytest.raises(TimeoutError, match="waited 1 s for rank 0"):
        wait_for_rank_zero(path, started=payload["time"] + 3600, timeout_s=1)
    publish_rendezvous(path, config="/new/config.yaml")
    assert wait_for_rank_zero(path, started=0, timeout_s=1) == "/new/config.yaml"
    publish_rendezvous(path, error="ConfigError: bad")
    with pytest.raises(RuntimeError, match="rank 0 stopped before training: ConfigError: bad"):
        wait_for_rank_zero(path, started=0, timeout_s=1)


def ddp_run_losing_a_rank(run, tmp_path, rank: int, code: int, others_sleep: float):
    """A 2-rank gloo run in which global rank ``rank`` ends abruptly (os._exit(code)) at step 2."""
    return run_train_cli(
        [
            f"hydra.run.dir={run}",
            f"paths.root_dir={tmp_path}",
            "trainer=ddp_cpu",
            *FAST_TRAINER,
            *TINY_UNET,
            "logger=csv",
            "trainer.max_steps=50",
            "+callbacks.die._target_=tests.robustness.helpers.ExitOnRank",
            f"+callbacks.die.rank={rank}",
            "+callbacks.die.step=2",
            f"+callbacks.die.code={code}",
            f"+callbacks.die.others_sleep={others_sleep}",
        ],
        cwd=tmp_path,
        check=False,
    )


@pytest.mark.slow
def test_a_worker_that_dies_leaves_the_run_failed_with_the_reason(tmp_path):
    """The watchdog ends rank 0 (blocked in a collective) with os._exit, which skips every finally: before,
    metrics.json stayed at "running" forever."""
    run = tmp_path / "run"
    result = ddp_run_losing_a_rank(run, tmp_path, rank=1, code=3, others_sleep=5)
    assert result.returncode != 0
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "DDP rank 1 exited with code 3"


@pytest.mark.slow
def test_when_rank_zero_dies_the_worker_records_it_and_stops(tmp_path):
    """Rank 0 killed without a word (os._exit: no finally, as SIGKILL) left metrics.json at "running" for ever,
    and rank 1 printed a 98-line gloo traceback after the collective's timeout."""
    run = tmp_path / "run"
    started = time.time()
    result = ddp_run_losing_a_rank(run, tmp_path, rank=0, code=9, others_sleep=3)
    assert result.returncode == 9
    deadline = time.time() + 60  # the orphaned worker notices within a second or so
    while time.time() < deadline and json.loads((run / "metrics.json").read_text())["status"] == "running":
        time.sleep(0.5)
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("DDP rank 0 (pid ")
    assert "died without recording why" in result.stderr and "Traceback" not in result.stderr
    assert time.time() - started < 120
