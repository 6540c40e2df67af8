"""A user project's config dir (``--config-dir``, Hydra's additional config dir) next to ddpm-lab's own.

Hydra searches ddpm-lab's configs first and the user's after them: a user file names a new choice
(``experiment=my_exp``, ``model=my_net``) and, inside it, ``override``s ours. A user file with the same group
and name as one of ours would be silently ignored, so it is refused at start-up, with the way out."""

from __future__ import annotations

from pathlib import Path

from . import CONFIG_DIR
from .errors import ConfigError


def user_config_dirs() -> list[Path]:
    """The config dirs given with ``--config-dir`` to this Hydra app (none outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    sources = HydraConfig.get().runtime.config_sources
    return [Path(s.path) for s in sources if s.provider == "command-line" and s.schema == "file"]


def shadowed_configs(user_dir: Path) -> list[str]:
    """``group/name`` of each config in ``user_dir`` that has the same path as one of ddpm-lab's."""
    return sorted(
        str(path.relative_to(user_dir).with_suffix(""))
        for path in user_dir.rglob("*.yaml")
        if (CONFIG_DIR / path.relative_to(user_dir)).is_file()
    )


def validate_user_config_dirs() -> None:
    for user_dir in user_config_dirs():
        shadowed = shadowed_configs(user_dir)
        if shadowed:
            first = shadowed[0]
            group, _, name = first.rpartition("/")
            raise ConfigError(
                f"{user_dir} has configs named as ddpm-lab's own: {', '.join(shadowed)}. Hydra reads ddpm-lab's "
                "first, so yours would be silently ignored. Give each a name of its own (e.g. "
                f"{group + '/' if group else ''}{name}_mine.yaml) and select it ({group or 'config'}={name}_mine, "
                f"or `override /{group}: {name}_mine` in your experiment), or set the values you want to change "
                "in your experiment file."
            )
