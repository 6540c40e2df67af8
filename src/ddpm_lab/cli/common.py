"""Small helpers shared by the entry points."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:
    import torch


def version_line(prog: str) -> str:
    """What every CLI's ``--version`` prints: its name and ddpm-lab's version (``ddpm_lab.__version__``)."""
    return f"{prog} (ddpm-lab) {__version__}"


def answer_version(prog: str, argv: list[str] | None = None) -> None:
    """``--version`` on a Hydra app: print the version and exit before Hydra parses the command line (Hydra has
    no such flag and would take it for an override)."""
    if "--version" in (sys.argv[1:] if argv is None else argv):
        print(version_line(prog))
        raise SystemExit(0)


def report_config_errors(prog: str) -> Callable:
    """Decorate a Hydra task: a start-up error of a single run (a ConfigError, missing Inception weights) is
    printed as its one-paragraph message, exit status 1, instead of inside Hydra's traceback. With
    HYDRA_FULL_ERROR=1 the traceback stays, and a sweep's jobs report through Hydra as before."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .errors import ConfigError

    def decorate(task: Callable) -> Callable:
        @functools.wraps(task)
        def run(cfg: Any) -> Any:
            try:
                return task(cfg)
            except (ConfigError, FileNotFoundError) as err:
                if not isinstance(err, ConfigError):
                    from ..metrics.inception import InceptionWeightsError  # loaded by then: the task built the FID

                    if not isinstance(err, InceptionWeightsError):
                        raise
                sweeping = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
                if os.environ.get("HYDRA_FULL_ERROR") == "1" or sweeping:
                    raise
                print(f"{prog}: {err}", file=sys.stderr)
                raise SystemExit(1) from None

        return run

    return decorate


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto.")
    return device
