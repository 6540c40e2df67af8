"""README's "Running on a cluster" commands on real engines on this machine: a single-node SLURM cluster on
localhost (submitit sweeps, the sbatch template, a one-task allocation) and torchrun (2 processes; 2 "nodes").
Each must leave exactly one run dir with one completed ``metrics.json`` per job, written by global rank 0."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.sweeps.test_readme_sweeps import TOY_SIZES, leaderboard_rows, readme_section_commands, repo_copy, user_env

ROOT = Path(__file__).parents[2]
CLUSTER = readme_section_commands("Running on a cluster")
SLURM_UP = ROOT / "tests" / "cluster" / "slurm_up.sh"
SBATCH = ROOT / "scripts" / "slurm_ddp.sbatch"


def run_as_user(args: list[str], repo: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command as a user would, from the root of the repository copy (whose ``tests`` package holds the
    callbacks some tests inject on the command line: a signal or a kill at a given step)."""
    env = {**user_env(), "PYTHONPATH": str(repo)}
    return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)


def restarted_once(summary: dict, reason: str, step: int, resumed_from: set[int] | None = None) -> dict:
    """The record of a job stopped once (``reason`` in its log) at ``step`` and resumed from that step (or, for a
    job killed without warning, from one of the checkpoints ``resumed_from`` before it). Returns the log entry."""
    assert summary["restarts"] == 1, summary
    (entry,) = summary["restart_log"]
    assert reason in entry["reason"], entry
    if resumed_from is None:
        assert entry["stopped_at_step"] == step and entry["resumed_from_step"] == step, entry
    else:
        assert entry["resumed_from_step"] in resumed_from and entry["stopped_at_step"] is None, entry
    return entry


# Log the training loss at every step, so that the history shows each step once (or twice, if a resume kept
# the rows of the steps it replays).
EVERY_STEP = ["trainer.log_every_n_steps=1"]


def history_steps_once(run: Path) -> None:
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open() if '"train/loss"' in line]
    assert steps == list(range(30)), f"every training step once, in order: {steps}"


def one_wandb_run(run: Path) -> int:
    """The number of local W&B run dirs of a run (one per attempt), after checking they are one W&B run."""
    dirs = list(run.glob("wandb/offline-run-*"))
    assert len({d.name.rsplit("-", 1)[1] for d in dirs}) == 1, f"attempts under one W&B run id: {dirs}"
    return len(dirs)


@contextlib.contextmanager
def requeued_jobs_start_now():
    """SLURM holds a requeued job back for about two minutes (its BeginTime) before it may start again; while
    this is open, a requeued job waiting on that is told to start now (``scontrol update StartTime=now``, as an
    administrator can), so a test waits seconds, not minutes. Nothing else about the requeue changes."""
    done = threading.Event()

    def release() -> None:
        while not done.wait(1.0):
            listing = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], capture_output=True, text=True)
            for line in listing.stdout.splitlines():
                job_id, reason = [*line.split(maxsplit=1), ""][:2]
                if "BeginTime" in reason:
                    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def signal_at(step: int, signal: str, job: int | None = None) -> list[str]:
    """Overrides that make SLURM send ``signal`` to every task of the job at ``step`` of its first attempt."""
    target = "+callbacks.slurm_signal._target_=tests.robustness.helpers.SlurmSignalOnceAtStep"
    job_filter = [f"+callbacks.slurm_signal.job={job}"] if job is not None else []
    return [target, f"+callbacks.slurm_signal.step={step}", f"+callbacks.slurm_signal.signal={signal}", *job_filter]


def cluster_lines(prefix: str) -> list[str]:
    return [line for line in CLUSTER if line.startswith(prefix)]


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running localhost SLURM cluster (partition debug), started by tests/cluster/slurm_up.sh."""
    if shutil.which("sinfo") is None and os.geteuid() != 0:
        pytest.skip("SLURM is not installed and installing it needs root (tests/cluster/slurm_up.sh)")
    result = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=600)
    if result.returncode == 3:
        pytest.skip(f"no SLURM cluster: {result.stderr.strip()}")
    assert result.returncode == 0, f"slurm_up.sh failed:\n{result.stdout}\n{result.stderr}"
    return "debug"


def job_summaries(parent: Path, jobs_only: bool = False) -> dict[str, dict]:
    """metrics.json of every run dir under ``parent`` (a sweep's job dirs only, with ``jobs_only``)."""
    dirs = [p for p in sorted(parent.iterdir()) if p.is_dir() and (p.name.isdigit() or not jobs_only)]
    return {p.name: json.loads((p / "metrics.json").read_text()) for p in dirs}


def assert_one_completed_ddp_run(summary: dict, world_size: int = 2) -> None:
    assert summary["status"] == "completed", summary.get("error")
    assert summary["world_size"] == world_size and summary["global_step"] == 30


def slurm_sweep_line() -> str:
    (line,) = [line for line in cluster_lines("ddpm-train -m") if "trainer=ddp_cpu" in line]
    return line


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.xdist_group("slurm")  # one worker: a queued job would leave the other idle
def test_submitit_sweep_on_slurm(slurm_cluster, tmp_path):
    """`+launcher=slurm` with trainer=ddp_cpu: one SLURM job of 2 tasks (gloo DDP) per sweep job. Job 1 gets
    submitit's warning signal (SIGUSR2, as before its time limit or at a pre-emption) at step 15: both ranks
    save last.ckpt at step 20 (they compare notes every 10 steps), submitit requeues the job, and it resumes
    in its job dir from step 20."""
    repo = repo_copy(tmp_path)
    env = user_env()
    line = slurm_sweep_line()
    extra = [*TOY_SIZES, *EVERY_STEP, *signal_at(15, "USR2", job=1)]
    with requeued_jobs_start_now():
        result = run_as_user([*shlex.split(line), *extra], repo, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    (sweep,) = (repo / "logs" / "train" / "multiruns").iterdir()
    script = next((sweep / ".submitit").glob(".submission_file_*.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "#SBATCH --gpus-per-node=0" in script
    assert "#SBATCH --partition=debug" in script
    jobs = job_summaries(sweep, jobs_only=True)
    assert sorted(jobs) == ["0", "1", "2"]  # +ablation=schedule: linear, cosine, sigmoid
    for name, summary in jobs.items():
        assert_one_completed_ddp_run(summary)
        assert summary["choices"]["trainer"] == "ddp_cpu"
        attempts = 2 if name == "1" else 1
        assert one_wandb_run(sweep / name) == attempts, "rank 1 must not start a W&B run"
        history_steps_once(sweep / name)
    restarted_once(jobs["1"], "SIGUSR2", 20)  # signalled at 15; DDP ranks agree every 10 steps
    # ... and it ends with the weights of the same job trained without a stop (ddpm-lab's own 2-rank launcher)
    reference = run_as_user(
        ["ddpm-train", "experiment=toy_moons", "trainer=ddp_cpu", "schedule=cosine", *TOY_SIZES], repo
    )
    assert reference.returncode == 0, reference.stderr[-4000:]
    (straight,) = (repo / "logs" / "train" / "runs").iterdir()
    a = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(sweep / "1" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for key, value in a.items():
        assert torch.allclose(value, b[key], atol=1e-6, rtol=0), key
    assert "restarts" not in jobs["0"] and "restarts" not in jobs["2"]
    assert {s["choices"]["schedule"] for s in jobs.values()} == {"linear", "cosine", "sigmoid"}
    rows = leaderboard_rows(sweep, "val/sample_distance", repo, env, tmp_path / "board")
    assert len(rows) == 3


def test_gpu_slurm_line_asks_for_one_gpu_per_task():
    """The GPU sweep line cannot run here; its SLURM request is derived from the trainer (tasks = GPUs = 4)."""
    from hydra import compose, initialize_config_dir

    from ddpm_lab.cli import CONFIG_DIR

    (line,) = [line for line in cluster_lines("ddpm-train -m") if "trainer=ddp " in line]
    overrides = [o for o in shlex.split(line)[2:] if not o.startswith("+ablation")]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 4, 4)
    assert launcher.partition == "gpu" and launcher._target_.endswith("SlurmLauncher")


def test_a_gpu_slurm_request_with_devices_auto_is_refused_with_the_fix():
    """The login node cannot count a compute node's GPUs: auto was sized as 1 task per node."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    from ddpm_lab.cli import CONFIG_DIR

    overrides = ["experiment=toy_moons", "trainer=ddp", "trainer.devices=auto", "+launcher=slurm"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with pytest.raises(
        InterpolationResolutionError,
        match=r"trainer.devices=auto cannot size the SLURM request.*"
        r"trainer.devices=4",
    ):
        OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cpu = compose(
            config_name="train",
            overrides=[*overrides[:1], "trainer=ddp_cpu", "+launcher=slurm"],
            return_hydra_config=True,
        )
    assert (cpu.hydra.launcher.tasks_per_node, cpu.hydra.launcher.gpus_per_node) == (cpu.trainer.devices, 0)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.xdist_group("slurm")  # one worker: a queued job would leave the other idle
def test_sbatch_template_runs_one_ddp_job(slurm_cluster, tmp_path):
    """README's sbatch line: srun starts 2 tasks; rank 1 follows rank 0's run dir (one dir, one record). SLURM's
    time-limit warning (the template's --signal=USR1, sent here at step 15) makes the ranks save last.ckpt at
    the next step they compare notes (20); rank 0 requeues the job, and the requeued job (same id) resumes in the
    same run dir from step 20."""
    repo = repo_copy(tmp_path)
    (line,) = cluster_lines("sbatch ")
    assert SBATCH.read_text() == (repo / "scripts" / "slurm_ddp.sbatch").read_text()
    args = ["sbatch", "--wait", *shlex.split(line)[1:], *TOY_SIZES, *EVERY_STEP, *signal_at(15, "USR1")]
    with requeued_jobs_start_now():
        result = run_as_user(args, repo, timeout=900)
    job_id = re.search(r"Submitted batch job (\d+)", result.stdout).group(1)
    output = (repo / f"slurm-{job_id}.out").read_text()
    assert result.returncode == 0, output[-4000:]
    (name,) = job_summaries(repo / "logs" / "train" / "runs")
    run = repo / "logs" / "train" / "runs" / name
    summary = json.loads((run / "metrics.json").read_text())
    assert_one_completed_ddp_run(summary)
    restarted_once(summary, "SIGUSR1", 20)  # signalled at 15; DDP ranks agree every 10 steps
    history_steps_once(run)
    assert one_wandb_run(run) == 2
    assert not list((repo / "logs" / ".rendezvous").glob("*.json")), "rank 0 removes its rendezvous file"


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.xdist_group("slurm")  # one worker: a queued job would leave the other idle
def test_one_task_allocation_launches_its_own_ranks(slurm_cluster, tmp_path):
    """`srun -n1 -c2 ddpm-train trainer=ddp_cpu`: ddpm-train starts rank 1 itself (Lightning must not take
    SLURM's one-task view, where both processes were rank 0 of 1)."""
    repo = repo_copy(tmp_path)
    (mention,) = re.findall(r"`(srun -n1 -c2 ddpm-train trainer=ddp_cpu)`", (ROOT / "README.md").read_text())
    result = run_as_user([*shlex.split(mention), "experiment=toy_moons", *TOY_SIZES], repo, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    (run,) = job_summaries(repo / "logs" / "train" / "runs").values()
    assert_one_completed_ddp_run(run)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.xdist_group("slurm")  # one worker: a queued job would leave the other idle
def test_srun_layout_that_does_not_match_the_trainer_is_refused(slurm_cluster, tmp_path):
    repo = repo_copy(tmp_path)
    result = run_as_user(
        ["srun", "--ntasks-per-node=2", "ddpm-train", "experiment=toy_moons", "trainer=ddp_cpu", "trainer.devices=4"],
        repo,
        timeout=300,
    )
    assert result.returncode != 0
    assert "slurm started 2 process(es) per node on 1 node(s), but the trainer asks for trainer.devices=4" in (
        result.stderr
    )
    assert "--ntasks-per-node=4" in result.stderr
    assert "ddpm-train (rank 1): rank 0 stopped before training" in result.stderr
    (run,) = job_summaries(repo / "logs" / "train" / "runs").values()
    assert run["status"] == "failed" and "trainer.devices=4" in run["error"]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    """README's torchrun line (--max-restarts=1), with rank 1 SIGKILLed at step 20 of the first attempt:
    torchrun restarts both ranks, rank 0 finds the first attempt's run dir, and they resume from step 20."""
    repo = repo_copy(tmp_path)
    (line,) = [line for line in cluster_lines("torchrun --standalone")]
    kill = [
        "callbacks.model_checkpoint.every_n_train_steps=10",
        "+callbacks.kill._target_=tests.robustness.helpers.KillOnceAtStep",
        "+callbacks.kill.step=20",
        "+callbacks.kill.rank=1",
    ]
    result = run_as_user(["bash", "-c", f"{line} {' '.join([*TOY_SIZES, *EVERY_STEP, *kill])}"], repo, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    (name,) = job_summaries(repo / "logs" / "train" / "runs")
    run = repo / "logs" / "train" / "runs" / name
    summary = json.loads((run / "metrics.json").read_text())
    assert_one_completed_ddp_run(summary)
    # rank 0 learns of rank 1's death in a collective (gloo: connection reset), or is killed by torchrun first;
    # the kill may cut the save of step 20's checkpoint, which then stays at step 15's (validation) or 10's
    restarted_once(summary, "", 20, resumed_from={10, 15, 20})
    history_steps_once(run)


@pytest.mark.slow
def test_torchrun_two_nodes_started_seconds_apart_share_one_run_dir(tmp_path):
    """Node 1 starts 2 s before node 0: each would have taken its own timestamp (a stray run dir)."""
    repo = repo_copy(tmp_path)
    node0, node1 = cluster_lines("torchrun --nnodes=2")
    port = str(29500 + os.getpid() % 400)  # README's port, made unique per test process
    env = user_env()

    def start(line):
        command = f"{line.replace('29533', port)} {' '.join(TOY_SIZES)}"
        return subprocess.Popen(["bash", "-c", command], cwd=repo, env=env, stderr=subprocess.PIPE, text=True)

    second = start(node1)
    time.sleep(2.0)
    first = start(node0)
    for proc in (first, second):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-4000:]
    (run,) = job_summaries(repo / "logs" / "train" / "runs").values()
    assert_one_completed_ddp_run(run)
