"""Every sweep command in README's "Sweeps" section, run as a user pastes it: from the root of a copy of the
repository, offline, with nothing about dirs or paths added, only small size/step overrides appended (and
the CPU in place of the GPU the image experiments ask for). Each must give one run dir and a completed
``metrics.json`` per job, and ``ddpm-leaderboard`` must rank the jobs."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST_TRAINER, TINY_UNET
from tests.data_files import write_tiny_cifar10

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def readme_section_commands(heading: str) -> list[str]:
    """The command lines of the ```bash blocks under ``## heading`` (trailing comments dropped)."""
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.splitlines():
            command = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            if command:
                lines.append(command)
    return lines


SWEEP_SECTION = readme_section_commands("Sweeps, ablations and the leaderboard")
SWEEPS = [line for line in SWEEP_SECTION if re.match(r"ddpm-(train|eval) -m ", line)]
LEADERBOARDS = [line for line in SWEEP_SECTION if line.startswith("ddpm-leaderboard ")]

TOY_SIZES = [
    "trainer.max_steps=30",
    "trainer.val_check_interval=15",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.num_train=512",
    "data.num_val=200",
    "data.num_test=200",
    "model.hidden_dim=32",
    "callbacks.sample_distance.num_samples=200",
    "callbacks.sample_images.num_samples=50",
    "callbacks.sample_images.every_n_steps=30",
]
IMAGE_SIZES = [
    *(o for o in FAST_TRAINER if o != "metrics=none"),  # the README line's own metrics stay on
    "data.batch_size=8",
    "diffusion.num_timesteps=20",
    *TINY_UNET,
]
FID_SIZES = [
    "metrics.fid.num_samples=5",
    "metrics.fid.batch_size=5",
    "metrics.fid.steps=3",
    "metrics.fid.every_n_steps=4",
    "metrics.fid.reference_num_images=12",
    "metrics.fid.progress=false",
    "metrics.nll.num_images=2",
    "metrics.nll.every_n_steps=4",
    "metrics.nll.progress=false",
]
EVAL_SIZES = [
    "metrics.fid.num_samples=4",  # precision/recall (k=3) needs more than 3
    "metrics.fid.batch_size=4",
    "metrics.fid.reference_num_images=6",
    "metrics.fid.progress=false",
    "metrics.nll.num_images=1",
    "metrics.nll.progress=false",
    # A sampler sweep compares samplers; the bound is the same model's in every job, 1000 network calls each.
    "metrics.nll=null",
    "limit_batches=1",
    "device=cpu",
]


def repo_copy(tmp_path: Path) -> Path:
    """A copy of the repository (what a clone holds) to start commands from."""
    copy = tmp_path / "repo"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "logs", "data", "outputs", "multirun", "wandb", ".cache", "*.egg-info", "__pycache__"
        ),
    )
    return copy


def user_env(torch_home: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("DDPM_LAB_ROOT", None)
    if torch_home is not None:  # where torch-fidelity looks for the Inception weights a user downloaded
        env["TORCH_HOME"] = str(torch_home)
    return env


def with_inception_weights(tmp_path: Path) -> Path:
    from tests.inception_weights import write_random_inception_weights

    torch_home = tmp_path / "torch_home"
    write_random_inception_weights(torch_home / "hub" / "checkpoints" / INCEPTION_FILE)
    return torch_home


def run(line: str, cwd: Path, env: dict[str, str], extra: list[str] = (), timeout: int = 600):
    result = subprocess.run(
        [*shlex.split(line), *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{line}\n{result.stderr[-4000:]}"
    return result


def sizes_for(line: str) -> list[str]:
    if "<toy run>" in line:
        return [*EVAL_SIZES, "sample_distance.num_samples=200"]
    if line.startswith("ddpm-eval"):
        return EVAL_SIZES
    if "experiment=toy_" in line:
        return TOY_SIZES
    return [*IMAGE_SIZES, *FID_SIZES]


def expected_jobs(line: str, extra: list[str]) -> int:
    """How many jobs the sweep has: Optuna's n_trials, else the grid of the preset's params x the command
    line's comma lists (expanded as Hydra's basic sweeper does)."""
    trials = re.findall(r"hydra\.sweeper\.n_trials=(\d+)", " ".join([line, *extra]))
    if trials:
        return int(trials[-1])
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict

    from ddpm_lab.cli import CONFIG_DIR
    from ddpm_lab.cli.sweep_preflight import sweep_jobs

    overrides = [*shlex.split(line)[2:], *extra]
    fixed = [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name=line.split()[0].split("-")[1], overrides=fixed, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = overrides
    return len(sweep_jobs(cfg))


def expected_seeds(line: str) -> int:
    """Seeds per arm of a README sweep line: its +seeds preset's count, else 1."""
    preset = re.search(r"\+seeds=(\w+)", line)
    if not preset:
        return 1
    from omegaconf import OmegaConf

    from ddpm_lab.cli import CONFIG_DIR

    params = OmegaConf.load(CONFIG_DIR / "seeds" / f"{preset.group(1)}.yaml").hydra.sweeper.params
    return len(str(params.seed).split(","))


def leaderboard_rows(sweep: Path, metric: str, cwd: Path, env: dict[str, str], out: Path) -> list[dict]:
    run(f"ddpm-leaderboard {sweep} --metric {metric} --which final --out {out}", cwd, env)
    with open(out / "leaderboard.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
@pytest.mark.parametrize("line", SWEEPS)
def test_readme_sweep_runs_as_pasted(line, tmp_path):
    repo = repo_copy(tmp_path)
    toy_checkpoint = "<toy run>" in line
    needs_weights = "cifar10" in line or (line.startswith("ddpm-eval") and not toy_checkpoint)
    env = user_env(with_inception_weights(tmp_path) if needs_weights else None)
    if "cifar10" in line:  # CIFAR-10 as torchvision's download leaves it, in the default data dir
        write_tiny_cifar10(repo / "data")
    if toy_checkpoint:  # a toy_moons run, as README's `ddpm-train experiment=toy_moons` makes one
        run("ddpm-train experiment=toy_moons", repo, env, TOY_SIZES)
        (trained,) = (repo / "logs" / "train" / "runs").iterdir()
        line = line.replace("<toy run>", str(trained.relative_to(repo)))
    elif "<run>" in line:  # a checkpoint to evaluate: a quickstart run, trained as README's `ddpm-train` does
        # T=1000 (the preset samples up to 1000 steps), on 8x8 digits with a one-level U-Net: 10 jobs of
        # 1000-step sampling and NLL stay cheap.
        sizes = [o for o in IMAGE_SIZES if not o.startswith("diffusion.")]
        if "ema.posthoc_std" in line:  # README: "a run trained with callbacks.posthoc_ema.snapshot_every=N"
            sizes.append("callbacks.posthoc_ema.snapshot_every=2")
        run("ddpm-train", repo, env, [*sizes, "metrics=none", "data.image_size=8", "model.channel_mults=[1]"])
        (trained,) = (repo / "logs" / "train" / "runs").iterdir()
        line = line.replace("<run>", str(trained.relative_to(repo)))
    extra = sizes_for(line)
    if "+search=optuna" in line:
        extra = [*extra, "hydra.sweeper.n_trials=3"]
    run(line, repo, env, extra)

    task = "eval" if line.startswith("ddpm-eval") else "train"
    (sweep,) = (repo / "logs" / task / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert len(jobs) == expected_jobs(line, extra)
    for job in jobs:
        summary = json.loads((job / "metrics.json").read_text())
        assert summary["status"] == "completed", (job, summary.get("error"))
        # Hydra's per-job log holds Lightning's messages and ddpm-lab's own (it was empty before)
        job_log = (job / ("evaluate.log" if task == "eval" else "train.log")).read_text()
        assert "Trainer" in job_log and ("evaluated " if task == "eval" else "completed at step ") in job_log
        if task == "train":
            assert len(list(job.glob("wandb/offline-run-*"))) == 1, "one W&B run per job"
    assert not list((repo / "logs" / task).glob("runs/*")), "a sweep writes no single-run dirs"

    metric = "val/sample_distance" if "toy_" in line or toy_checkpoint else "val/fid" if needs_weights else "val/loss"
    rows = leaderboard_rows(sweep, metric, repo, env, tmp_path / "board")
    seeds = expected_seeds(line)
    assert len(rows) == len(jobs) // seeds and {r["n"] for r in rows} == {str(seeds)}, "one row per arm"
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    if seeds > 1:  # intervals over seeds, and a verdict on every arm
        assert all(float(r["ci95_low"]) <= float(r[f"final {metric}"]) <= float(r["ci95_high"]) for r in rows)
        assert all(r["not_different_from"] for r in rows)
        markdown = (tmp_path / "board" / "leaderboard.md").read_text()
        assert "Pairwise comparisons (Welch's two-sided t-test" in markdown and "Holm" in markdown
        with open(tmp_path / "board" / "runs.csv") as handle:
            assert len(list(csv.DictReader(handle))) == len(jobs), "every seed's run behind its arm"
    if "ema.posthoc_std" in line:
        assert {r["ema_std"] for r in rows} == {"0.05", "0.1"}
    if "sampler_nfe" in line:  # one table across samplers and NFE, and the metric-vs-NFE picture
        assert {r["sampler"] for r in rows} == {"ddim", "dpmpp_2m", "ipndm", "euler_ancestral"}
        assert (tmp_path / "board" / "metric_vs_nfe.png").stat().st_size > 10_000
    for board_line in LEADERBOARDS:  # README's own leaderboard lines, on the sweeps they fit
        ranks_by = re.search(r"--metric (\S+)", board_line)
        # no --metric ranks by the runs' headline metric; run it on the FID sweeps only, to keep the suite short
        if (ranks_by.group(1) if ranks_by else "val/fid") != metric:
            continue
        run(board_line.replace("logs/train/multiruns/<date>", str(sweep.relative_to(repo))), repo, env)
        top = re.search(r"--top (\d+)", board_line)
        with open(sweep / "leaderboard.csv") as handle:  # written into the first PATH by default
            arms = len(jobs) // seeds
            assert len(list(csv.DictReader(handle))) == min(arms, int(top.group(1)) if top else arms)


def test_every_readme_sweep_line_is_covered():
    """The parametrisation above is read from README, so a new sweep line there is run by the test; this
    checks that the parsing found the lines README has (and that none of them hides a dir override)."""
    assert len(SWEEPS) >= 6 and len(LEADERBOARDS) == 2
    assert any("+launcher=local_parallel" in line for line in SWEEPS)
    assert any("+search=optuna" in line for line in SWEEPS)
    for line in SWEEPS:
        assert not re.search(r"(hydra\.(run|sweep)\.dir|paths\.\w+)=", line), line
