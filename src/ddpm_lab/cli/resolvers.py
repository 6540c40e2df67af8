"""OmegaConf resolvers used by ``conf/`` (registered when ``ddpm_lab.cli`` is imported).

``${ddpm_lab.optuna_direction:${objective}}`` is the sweep direction of the objective metric, from the metric
registry (maximize for val/is, val/precision, val/recall; minimize for distances and losses).

``${ddpm_lab.sigma_data:${data._target_}}`` is EDM's sigma_data for the configured data (``data_sigma``).

``${ddpm_lab.root:}`` replaces ``${hydra:runtime.cwd}`` in ``paths.root_dir``: Hydra's sweepers resolve
``hydra.sweep.dir`` before HydraConfig exists, so anything built on a ``hydra:`` interpolation fails before the
first job of a multirun. The value is cached, and Hydra copies the resolver cache into every job's config, so
all jobs of a sweep (joblib workers and SLURM tasks included) see the directory the sweep was started from.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from ..metric_registry import optuna_direction


def project_root() -> str:
    """$DDPM_LAB_ROOT, else the directory ``ddpm-train`` was started from."""
    return os.environ.get("DDPM_LAB_ROOT") or os.getcwd()


def device_count(devices: object) -> int:
    """How many processes per node ``trainer.devices`` asks for: an int, a digit string, or a list of ids.
    ``auto``/-1 count as 1 here: Lightning's ``auto`` on the CPU (GPU requests: ``slurm_tasks_per_node``)."""
    if isinstance(devices, bool):
        raise ValueError(f"trainer.devices={devices!r} is not a device count")
    if isinstance(devices, int):
        return max(devices, 1)
    if isinstance(devices, str):
        text = devices.strip()
        if text.lstrip("-").isdigit():
            return max(int(text), 1)
        if text == "auto":
            return 1
        return len([part for part in text.strip("[]").split(",") if part.strip()])
    return len(list(devices))  # a list of device ids


def slurm_tasks_per_node(accelerator: object, devices: object) -> int:
    """Tasks to request from SLURM per node: one per DDP process. On GPUs ``auto``/-1 means every GPU of a
    compute node, which the login node submitting the job cannot see: refused, with the fix (it asked for 1 task
    per node, so a 4-GPU node trained on one)."""
    gpu = str(accelerator) in ("gpu", "cuda")
    if gpu and str(devices).strip() in ("auto", "-1"):
        raise ValueError(
            f"+launcher=slurm with trainer.devices={devices} cannot size the SLURM request: the login node does not "
            "see the compute nodes' GPUs. Name the GPUs per node, e.g. trainer.devices=4."
        )
    return device_count(devices)


def gpus_per_node(accelerator: object, devices: object) -> int:
    """GPUs to request from SLURM per node: one per process on GPU accelerators, none on the CPU."""
    return slurm_tasks_per_node(accelerator, devices) if str(accelerator) in ("gpu", "cuda") else 0


def data_sigma(data_target: str) -> float:
    """EDM's sigma_data for the configured data: its DataModule's ``sigma_data`` attribute (points: 1 after
    standardisation), else EDM's for images in [-1, 1] (``diffusion.edm.IMAGE_SIGMA_DATA``)."""
    from hydra.utils import get_class

    from ..diffusion.edm import IMAGE_SIGMA_DATA

    return float(getattr(get_class(data_target), "sigma_data", IMAGE_SIGMA_DATA))


def register_resolvers() -> None:
    for name, function in (
        ("ddpm_lab.root", project_root),
        ("ddpm_lab.slurm_tasks_per_node", slurm_tasks_per_node),
        ("ddpm_lab.gpus_per_node", gpus_per_node),
        ("ddpm_lab.optuna_direction", optuna_direction),
        ("ddpm_lab.sigma_data", data_sigma),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=name == "ddpm_lab.root")
