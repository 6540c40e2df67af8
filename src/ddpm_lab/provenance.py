"""Which code produced a record: the ddpm-lab version, its git commit (and whether the tree had uncommitted
changes), the versions of Python, torch, Lightning and CUDA, and the device. Code versions move numbers (README,
"Changes that move numbers"), so every run record carries this as ``code`` and the leaderboard shows it and
warns when a ranked group mixes versions."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def git_state(directory: Path = PACKAGE_DIR) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout that tracks ddpm-lab's source in ``directory``, dirty meaning
    uncommitted changes to any tracked file (configs included); (None, None) for an installed wheel (even one
    inside another repository, which does not track it) or where git is missing."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        ).stdout

    try:
        git("ls-files", "--error-unmatch", "__init__.py")  # this source is tracked by the checkout
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", ":/").strip())
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, dirty


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def device_name(device: Any = None) -> str:
    """'cpu (x86_64)', or the GPU's name (e.g. 'NVIDIA H200') for a CUDA device."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.machine()})"


def code_provenance(device: Any = None) -> dict[str, Any]:
    """The record's ``code`` field."""
    import torch

    commit, dirty = git_state()
    return {
        "ddpm_lab": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "version": code_version(__version__, commit, dirty),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": _version("lightning"),
        "cuda": torch.version.cuda,
        "device": device_name(device),
    }


def code_version(version: str, commit: str | None, dirty: bool | None) -> str:
    """'0.1.0' for a release install, '0.1.0+g1a2b3c4' for a checkout, '+dirty' added for uncommitted changes."""
    if not commit:
        return version
    return f"{version}+g{commit[:7]}" + (".dirty" if dirty else "")
