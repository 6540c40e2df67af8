"""ddpm-lab as a researcher's own project uses it: built as an sdist, the wheel built from that sdist, both
installed non-editable into a fresh venv (the dependencies reused offline from this one), with
examples/custom_project installed beside it, and every command run from the user's project dir outside the
repository. Nothing of the checkout is on the path there (checked)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddpm_lab import __version__
from tests.sweeps.test_readme_sweeps import FID_SIZES, IMAGE_SIZES, readme_section_commands, with_inception_weights

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "custom_project"
OWN_PROJECT = [
    line
    for line in readme_section_commands("Your own project: your network, data and experiments on ddpm-lab")
    if line.startswith("ddpm-")
]
# One venv for the module: on one xdist worker (make test runs --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("installed_wheel")]

RINGS_SIZES = [
    "trainer.max_steps=20",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.num_train=400",
    "data.num_val=200",
    "data.num_test=200",
    "callbacks.sample_distance.num_samples=200",
    "callbacks.sample_images.num_samples=50",
    "callbacks.sample_images.every_n_steps=20",
    "callbacks.model_checkpoint.every_n_train_steps=10",
]


def pip(*args: str | Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *map(str, args)], check=True, timeout=300)


class Installation:
    def __init__(self, venv: Path, project: Path, torch_home: Path) -> None:
        self.venv, self.project, self.bin = venv, project, venv / "bin"
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DDPM_LAB_ROOT")},
            "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
            "VIRTUAL_ENV": str(venv),
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "TORCH_HOME": str(torch_home),  # where a user's downloaded Inception weights would be
        }

    def run(self, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(
            list(args), cwd=self.project, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installation:
    tmp = tmp_path_factory.mktemp("installed")
    source = tmp / "ddpm-lab"  # what an sdist is made of: no .git, no venv, no outputs
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    built = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta; print(build_meta.build_sdist('dist'))"],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    )
    sdist = source / "dist" / built.stdout.strip().splitlines()[-1]
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "wheels", sdist)
    (wheel,) = (tmp / "wheels").glob("ddpm_lab-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    # The dependencies from this venv, offline; its own editable ddpm-lab is a .pth there, which a plain path
    # entry does not process, so only the installed wheel can be imported.
    Path(purelib, "dependencies.pth").write_text(site.getsitepackages()[0] + "\n")
    pip("--python", python, "install", "--no-deps", "--no-index", wheel)
    project = tmp / "my_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    pip("--python", python, "install", "--no-deps", "--no-index", "--no-build-isolation", project)
    return Installation(venv, project, with_inception_weights(tmp))


def test_the_installed_package_is_the_wheel_with_its_configs(installed):
    where = installed.run("python", "-c", "import ddpm_lab.cli as c; print(c.__file__); print(c.CONFIG_DIR)").stdout
    module, config_dir = where.split()
    assert module.startswith(str(installed.venv)) and not module.startswith(str(ROOT))
    assert Path(config_dir, "train.yaml").is_file() and Path(config_dir, "experiment", "toy2d.yaml").is_file()
    for command in ("ddpm-train", "ddpm-sample", "ddpm-eval", "ddpm-fid", "ddpm-leaderboard", "ddpm-bench"):
        assert installed.run(command, "--version").stdout.strip() == f"{command} (ddpm-lab) {__version__}"
    assert "experiment: " in installed.run("ddpm-train", "--help").stdout


def test_quickstart_from_outside_the_repository(installed):
    installed.run("ddpm-train", *IMAGE_SIZES, *FID_SIZES)
    (record,) = (installed.project / "logs" / "train" / "runs").glob("*/metrics.json")
    summary = json.loads(record.read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 4
    assert np.isfinite(summary["final"]["val/fid"])
    (wandb_run,) = record.parent.glob("wandb/offline-run-*")  # the record names the local W&B run
    assert wandb_run.name.endswith(f"-{summary['wandb_run_id']}")


def test_their_experiment_overrides_ours_and_a_file_named_as_ours_is_refused(installed):
    job = installed.run("ddpm-train", "--config-dir", "conf", "experiment=rings", "--cfg", "job").stdout
    assert "_target_: rings_diffusion.RingDenoiser" in job and "_target_: rings_diffusion.RingsDataModule" in job
    assert "_target_: ddpm_lab.lightning.SampleDistanceCallback" in job  # callbacks=toy2d: ours
    assert "project: rings-diffusion" in job  # a value of ours (logger=wandb) set by their experiment
    assert "project: ddpm-lab" in installed.run("ddpm-train", "--cfg", "job").stdout  # without their dir: ours

    (installed.project / "shadow" / "model").mkdir(parents=True)
    (installed.project / "shadow" / "model" / "mlp.yaml").write_text("_target_: rings_diffusion.RingDenoiser\n")
    result = installed.run("ddpm-train", "--config-dir", "shadow", "experiment=toy_moons", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "has configs named as ddpm-lab's own: model/mlp. Hydra reads ddpm-lab's first" in result.stderr
    assert "override /model: mlp_mine" in result.stderr


def test_a_network_missing_an_argument_stops_at_start_up(installed):
    result = installed.run(
        "ddpm-train", "--config-dir", "conf", "experiment=rings", "model._target_=torch.nn.Linear", check=False
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "model=torch.nn.modules.linear.Linear cannot be built by ddpm-lab: its constructor has no " in result.stderr
    assert "sample_shape, learned_variance argument" in result.stderr and "Traceback" not in result.stderr


def test_readmes_own_project_commands_run_as_pasted(installed):
    """README's "Your own project" commands, in order, from the project's root (sizes appended to training)."""
    assert [c.split()[0] for c in OWN_PROJECT] == ["ddpm-train", "ddpm-train", "ddpm-sample", "ddpm-leaderboard"]
    single, sweep, sample, leaderboard = OWN_PROJECT
    runs = installed.project / "logs" / "train" / "runs"
    before = set(runs.glob("*/metrics.json"))  # the other tests' runs
    installed.run(*shlex.split(single), *RINGS_SIZES)
    (record,) = set(runs.glob("*/metrics.json")) - before
    assert json.loads(record.read_text())["status"] == "completed"

    installed.run(*shlex.split(sweep), *RINGS_SIZES)
    records = sorted((installed.project / "logs" / "train" / "multiruns").glob("*/*/metrics.json"))
    assert len(records) == 2
    widths = []
    for record in records:
        summary = json.loads(record.read_text())
        assert summary["status"] == "completed" and np.isfinite(summary["final"]["val/sample_mmd2"])
        config = (record.parent / "config_resolved.yaml").read_text()
        widths += [int(line.split(":")[1]) for line in config.splitlines() if line.startswith("  width:")]
    assert sorted(widths) == [32, 128]

    installed.run(*shlex.split(sample.replace("<run>", str(records[0].parent))), "num_samples=64", "device=cpu")
    (samples,) = (installed.project / "logs" / "sample" / "runs").glob("*/samples.npz")
    points = np.load(samples)["arr_0"]
    assert points.shape == (64, 2) and np.isfinite(points).all()

    board = installed.run(*shlex.split(leaderboard)).stdout
    assert "model.width" in board and "32" in board and "128" in board
