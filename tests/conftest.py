"""Shared fixtures: compose the Hydra config for tests, and write tiny data sets in their real formats."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from ddpm_lab.cli import CONFIG_DIR
from tests.data_files import write_tiny_celeba, write_tiny_cifar10, write_tiny_mnist

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Share the cores between the xdist workers (and the subprocesses they start, which inherit
    # OMP_NUM_THREADS): with every process running one thread per core, OpenMP threads oversubscribe the
    # cores and spin, and a test that takes 18 s alone took 245 s beside a DDP test.
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)

# Small enough to take a few CPU seconds, for any experiment's data.
TINY_UNET = [
    "model.base_channels=32",
    "model.channel_mults=[1,2]",
    "model.num_res_blocks=1",
    "model.attention_resolutions=[]",
    "model.dropout=0.0",
]
FAST_TRAINER = [
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "callbacks.sample_images.every_n_steps=2",
    "callbacks.sample_images.num_samples=4",
    "sampling.steps=3",
    "trainer.accelerator=cpu",
    "trainer.precision=32-true",
    "metrics=none",
]


def compose_config(config_name: str, tmp_path: Path, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as Hydra would, with outputs and data under tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(
            config_name=config_name,
            return_hydra_config=True,
            overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", *(overrides or [])],
        )
    HydraConfig.instance().set_config(cfg)  # as inside a Hydra job: HydraConfig.get() answers
    with open_dict(cfg):
        del cfg["hydra"]  # a job's cfg has no hydra node
    return cfg


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    """tmp_path/data with MNIST, CIFAR-10 and CelebA written small, in their real on-disk formats."""
    data = tmp_path / "data"
    write_tiny_mnist(data)
    write_tiny_cifar10(data)
    write_tiny_celeba(data)
    return data


class PicklePayload:
    """An object whose unpickling runs ``touch marker``: loaders must refuse it before it runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def run_train_cli(args: list[str], cwd: Path, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m ddpm_lab.cli.train ARGS`` (a real Hydra app) offline; ``tests`` stays importable so tests
    can inject callbacks with +callbacks.NAME._target_=tests...."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "ddpm_lab.cli.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def fid_overrides(weights: Path, tmp_path: Path, num_samples: int = 7) -> list[str]:
    """Turn FID and NLL on, small: 7 samples (an odd number, to test uneven DDP shards), 20 reference images."""
    return [
        "metrics=default",
        f"metrics.inception_weights={weights}",
        f"metrics.cache_dir={tmp_path / 'cache'}",
        f"metrics.fid.num_samples={num_samples}",
        "metrics.fid.batch_size=4",
        "metrics.fid.steps=3",
        "metrics.fid.every_n_steps=4",
        "metrics.fid.reference_num_images=20",
        "metrics.fid.save_samples=true",
        "metrics.fid.progress=false",
        "metrics.nll.num_images=4",
        "metrics.nll.every_n_steps=4",
        "metrics.nll.progress=false",
        "diffusion.num_timesteps=20",
    ]


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    from tests.inception_weights import write_random_inception_weights

    return write_random_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth")


def pytest_configure(config: pytest.Config) -> None:
    """Refuse ``--dist loadgroup`` where it silently does not group: pytest 9.2's structured node ids lose
    the group tags pytest-xdist <= 3.8 writes (pytest-xdist#1386), and the SLURM tests, which share one
    2-CPU node, would then run on both workers at once and wait on each other's jobs."""
    import xdist

    xdist_version = tuple(int(part) for part in xdist.__version__.split(".")[:2])
    if config.getoption("dist", "no") == "loadgroup" and pytest.version_tuple[:2] >= (9, 2) and xdist_version <= (3, 8):
        raise pytest.UsageError(
            f"pytest {pytest.__version__} with pytest-xdist {xdist.__version__}: --dist loadgroup does not "
            "group tests marked xdist_group (pytest-xdist#1386). Install the pytest that pyproject.toml's dev "
            "extra allows (`make install`, or pip install 'pytest<9.2'), or run without -n."
        )
