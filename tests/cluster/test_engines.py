"""README's "Running on a cluster" commands on real engines on this machine: a single-node SLURM cluster on
localhost (submitit sweeps, the sbatch template, a one-task allocation) and torchrun (2 processes; 2 "nodes").
Each must leave exactly one run dir with one completed ``metrics.json`` per job, written by global rank 0."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.sweeps.test_readme_sweeps import TOY_SIZES, leaderboard_rows, readme_section_commands, repo_copy, user_env

ROOT = Path(__file__).parents[2]
CLUSTER = readme_section_commands("Running on a cluster")
SLURM_UP = ROOT / "tests" / "cluster" / "slurm_up.sh"
SBATCH = ROOT / "scripts" / "slurm_ddp.sbatch"


def run_as_user(args: list[str], repo: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command as a user would, from the root of the repository copy."""
    return subprocess.run(args, cwd=repo, env=user_env(), capture_output=True, text=True, timeout=timeout)


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
    """`+launcher=slurm` with trainer=ddp_cpu: one SLURM job of 2 tasks (gloo DDP) per sweep job."""
    repo = repo_copy(tmp_path)
    env = user_env()
    line = slurm_sweep_line()
    result = run_as_user([*shlex.split(line), *TOY_SIZES], repo, timeout=900)
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
        assert len(list((sweep / name).glob("wandb/offline-run-*"))) == 1, "rank 1 must not start a W&B run"
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
    """README's sbatch line: srun starts 2 tasks; rank 1 follows rank 0's run dir (one dir, one record)."""
    repo = repo_copy(tmp_path)
    (line,) = cluster_lines("sbatch ")
    assert SBATCH.read_text() == (repo / "scripts" / "slurm_ddp.sbatch").read_text()
    result = run_as_user(["sbatch", "--wait", *shlex.split(line)[1:], *TOY_SIZES], repo, timeout=900)
    job_id = re.search(r"Submitted batch job (\d+)", result.stdout).group(1)
    output = (repo / f"slurm-{job_id}.out").read_text()
    assert result.returncode == 0, output[-4000:]
    (run,) = job_summaries(repo / "logs" / "train" / "runs").values()
    assert_one_completed_ddp_run(run)
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
    repo = repo_copy(tmp_path)
    (line,) = [line for line in cluster_lines("torchrun --standalone")]
    result = run_as_user(["bash", "-c", f"{line} {' '.join(TOY_SIZES)}"], repo, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    (run,) = job_summaries(repo / "logs" / "train" / "runs").values()
    assert_one_completed_ddp_run(run)


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
