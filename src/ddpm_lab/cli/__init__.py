"""Command-line entry points (Hydra apps). Their configs ship inside the package (``ddpm_lab/conf``), so an
editable clone, a wheel and an sdist install find them alike; a user project adds its own config dir on top with
Hydra's ``--config-dir`` (README: "Your own project")."""

from __future__ import annotations

from pathlib import Path

from .resolvers import register_resolvers

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
register_resolvers()
