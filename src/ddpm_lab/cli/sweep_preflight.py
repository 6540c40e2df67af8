"""Check every job of a multirun before the first one starts (a Hydra callback, ``conf/hydra/default.yaml``).

A sweep whose third job has a bad combination, or whose Optuna search space names a key the model does not
have, or whose objective is never logged, should fail in seconds with the reason, not after hours of training.
The callback expands the sweep the way the sweeper will (Hydra's basic sweeper: the full grid; Optuna: every
value of each parameter on top of the others' first values, plus both ends of an interval), composes each
job's config and runs the start-up validation of the app (``ddpm-train`` or ``ddpm-eval``) on it.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import ConfigCompositionException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .checkpoint_validation import validate_eval_config, validate_sample_config
from .validation import ConfigError, validate_config

VALIDATORS: dict[str, Callable[[DictConfig], None]] = {
    "train": validate_config,
    "eval": validate_eval_config,
    "sample": validate_sample_config,
}


def _values(override: Override) -> list[str]:
    """The job overrides one sweep parameter stands for (a plain override stands for itself)."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [f"{key}={override.get_value_element_as_str()}"]
    if override.is_discrete_sweep():
        return [f"{key}={value}" for value in override.sweep_string_iterator()]
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        return [f"{key}={sweep.start}", f"{key}={sweep.end}"]
    raise ConfigError(f"sweep parameter {key}: a {type(sweep).__name__} cannot be checked before the sweep")


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The override lists of the jobs to check, from ``hydra.sweeper.params`` and the command line."""
    sweeper = config.hydra.sweeper
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    merged: dict[str, list[str]] = {}  # as the sweepers do: a later override of the same key wins
    for override in OverridesParser.create().parse_overrides(params + task):
        merged[override.get_key_element()] = _values(override)
    choices = list(merged.values())
    if "Optuna" not in str(sweeper.get("_target_", "")):
        return [list(job) for job in itertools.product(*choices)]
    first = [values[0] for values in choices]
    jobs = [first]
    for position, values in enumerate(choices):
        jobs += [[*first[:position], value, *first[position + 1 :]] for value in values[1:]]
    return jobs


def _reason(err: BaseException) -> str:
    if isinstance(err, ConfigCompositionException):
        text = str(err)
        missing = re.search(r"Could not override '([^']+)'", text)
        if missing:  # Hydra's hint ("use +key=value") would add the key: not what a sweep over it means
            return (
                f"{missing.group(1)} does not exist in this job's config, so it cannot be swept: drop it, or choose "
                "a model/data group that has it (e.g. the MLP has no dropout)"
            )
        return text.splitlines()[0]
    return f"{type(err).__name__}: {err}"


def writable_dir_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot become a writable directory (None if it can): the nearest existing ancestor must be
    a directory this process may write into (checked without creating anything)."""
    import os

    target = Path(path).absolute()
    for parent in [target, *target.parents]:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a directory"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{parent} is not writable by this user"
            return None
    return None


class SweepPreflight(Callback):
    """Before anything runs: the run (or sweep) dir can be written, and every job of a multirun is validated
    (``on_multirun_start``). On failure it prints one message (naming the bad jobs) and exits with status 2
    (SystemExit: Hydra only warns about an Exception raised in a callback)."""

    def __init__(self, max_jobs: int = 512) -> None:
        self.max_jobs = max_jobs

    @staticmethod
    def _check_output_dir(config: DictConfig, key: str) -> None:
        path = OmegaConf.select(config, key)
        problem = writable_dir_problem(path) if path else None
        if problem:
            name = config.hydra.job.config_name
            print(
                f"ddpm-{name}: cannot write the output dir {key}={path}: {problem}. Choose another with "
                f"{key}=DIR, or move every run with paths.log_dir=DIR.",
                file=sys.stderr,
            )
            raise SystemExit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check_output_dir(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check_output_dir(config, "hydra.sweep.dir")
        config_name = kwargs.get("config_name") or config.hydra.job.config_name
        validate = VALIDATORS.get(str(config_name))
        if validate is None:
            return
        jobs = sweep_jobs(config)
        failures = []
        for overrides in jobs[: self.max_jobs]:
            try:
                validate(compose(config_name=config_name, overrides=overrides))
            except Exception as err:
                failures.append((overrides, _reason(err)))
        if failures:
            by_reason: dict[str, list[str]] = {}
            for overrides, reason in failures:
                by_reason.setdefault(reason, []).append(" ".join(overrides))
            shown = "\n".join(
                f"  - {reason}\n    in: {'; '.join(names[:3])}"
                + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
                for reason, names in by_reason.items()
            )
            print(
                f"ddpm-{config_name}: {len(failures)} of the {len(jobs)} jobs of this sweep would fail at start-up, "
                f"so none was started:\n{shown}",
                file=sys.stderr,
            )
            raise SystemExit(2)
