"""The ``ddpm-train`` command line read without running it: its overrides and ``--config-dir``s, and the
``paths.log_dir`` it resolves to (composed with no run dir and nothing written). Ranks > 0 of a torchrun/srun
launch and a restarted rank 0 read it before Hydra runs."""

from __future__ import annotations

from pathlib import Path

from . import CONFIG_DIR


def command_line_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's command line split into its overrides and its ``--config-dir``/``-cd`` dirs (other flags
    dropped)."""
    overrides, config_dirs, rest = [], [], iter(args)
    for arg in rest:
        if arg in ("--config-dir", "-cd"):
            config_dirs.append(next(rest, ""))
        elif arg in ("--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp"):
            next(rest, None)  # the flag's value
        elif arg.startswith("--config-dir="):
            config_dirs.append(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, config_dirs


def log_dir_of(args: list[str]) -> str:
    """``paths.log_dir`` of this command line; a user project's --config-dir is searched as Hydra's command line
    does (after ddpm-lab's configs)."""
    from hydra import compose, initialize_config_dir

    overrides, config_dirs = command_line_overrides(args)
    if config_dirs:
        overrides.append(f"hydra.searchpath=[{','.join(f'file://{Path(d).resolve()}' for d in config_dirs)}]")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=overrides)
    return str(cfg.paths.log_dir)
