"""Command-line entry points (Hydra apps). Configs live in the repository's ``conf/`` directory, or the
directory named by $DDPM_LAB_CONFIG_DIR."""

from __future__ import annotations

import os
from pathlib import Path

from .resolvers import register_resolvers

CONFIG_DIR = Path(os.environ.get("DDPM_LAB_CONFIG_DIR", Path(__file__).resolve().parents[3] / "conf"))
register_resolvers()
