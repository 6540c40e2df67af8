"""Start-up checks of the commands that read a checkpoint (``ddpm-eval``, ``ddpm-sample``, a resumed
``ddpm-train``): from the checkpoint's stored config and tensor shapes, read without loading its weights."""

from __future__ import annotations

from omegaconf import DictConfig

from ..checks import is_int
from .restarts import config_differences
from .validation import ConfigError, validate_command_line, validate_fid_options, validate_sampling


def validate_eval_config(cfg: DictConfig) -> None:
    """``ddpm-eval``: the checkpoint is a ddpm-lab one, and the sampler and FID settings are valid for it,
    before anything loads."""
    from hydra.utils import get_class

    validate_command_line(cfg)
    from .builders import build_diffusion

    stored = checkpoint_run_config(cfg.get("ckpt_path"))
    diffusion = build_diffusion(stored)
    validate_posthoc_ema(cfg)
    if cfg.get("sampling") is not None:
        validate_sampling(cfg.sampling, "sampling", diffusion)
    fid = (cfg.get("metrics") or {}).get("fid")
    if fid is None or getattr(get_class(stored.data._target_), "kind", "image") == "points":
        return  # 2-D data is measured by val/sample_distance: no FID, no Inception weights needed
    validate_sampling(fid, "metrics.fid", diffusion)
    validate_fid_options(fid)


def posthoc_snapshot_dir(cfg: DictConfig):
    """Where ``ddpm-eval``'s post-hoc EMA reads snapshots: ema.snapshot_dir, else the checkpoint's run dir's."""
    from pathlib import Path

    given = (cfg.get("ema") or {}).get("snapshot_dir")
    return Path(given) if given else Path(str(cfg.ckpt_path)).resolve().parent.parent / "posthoc_ema"


def validate_posthoc_ema(cfg: DictConfig) -> None:
    """ema.posthoc_std: a valid relative std, with the tracked EMA's weights asked for, and a rebuild at the
    checkpoint's step, from the snapshots saved up to it and the EMAs the checkpoint tracked, whose weight
    profile matches the one asked for (``plan_reconstruction``; weights memory-mapped, not read)."""
    from ..lightning.checkpointing import peek_checkpoint
    from ..lightning.posthoc_ema import tracked_emas
    from ..models.posthoc_ema import plan_reconstruction, sigma_rel_to_gamma

    std = (cfg.get("ema") or {}).get("posthoc_std")
    if std is None:
        return
    try:
        sigma_rel_to_gamma(std)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"ema.posthoc_std={std!r}: {err}") from err
    if not cfg.get("use_ema", True):
        raise ConfigError("ema.posthoc_std rebuilds EMA weights, but use_ema=false asks for the raw ones: drop one.")
    checkpoint = peek_checkpoint(cfg.ckpt_path)
    step = int(checkpoint.get("global_step", 0))
    directory = posthoc_snapshot_dir(cfg)
    try:
        plan_reconstruction(directory, step, sigma_rel=float(std), tracked=tracked_emas(checkpoint))
    except FileNotFoundError as err:
        raise ConfigError(
            f"ema.posthoc_std={std}: no post-hoc EMA snapshots at or before the checkpoint's step {step} in "
            f"{directory}. Train with callbacks.posthoc_ema.snapshot_every=N (e.g. 2% of the steps), or point "
            "ema.snapshot_dir at the run's posthoc_ema folder."
        ) from err
    except ValueError as err:
        raise ConfigError(f"ema.posthoc_std={std}: {err}") from err


def checkpoint_run_config(ckpt) -> DictConfig:
    """The run config stored in checkpoint ``ckpt`` (read without loading its tensors), or a ConfigError."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from ..lightning.checkpointing import stored_run_config

    if not ckpt or not Path(str(ckpt)).is_file():
        raise ConfigError(
            f"ckpt_path={ckpt} is not a file: pass a checkpoint, e.g. "
            "ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt"
        )
    try:
        stored = stored_run_config(ckpt)
    except ValueError as err:
        raise ConfigError(f"ckpt_path={ckpt}: {err}") from err
    if stored is None:
        raise ConfigError(f"ckpt_path={ckpt} is not a ddpm-lab checkpoint: it carries no run config.")
    return OmegaConf.create(stored)


def validate_sample_config(cfg: DictConfig) -> None:
    """``ddpm-sample``: counts, the checkpoint, and the sampler settings against its number of timesteps."""
    validate_command_line(cfg)
    for key in ("num_samples", "batch_size"):
        if not (is_int(cfg.get(key)) and cfg.get(key) >= 1):
            raise ConfigError(f"{key}={cfg.get(key)!r} is not valid: use an integer >= 1.")
    from .builders import build_diffusion

    stored = checkpoint_run_config(cfg.get("ckpt_path"))
    validate_sampling(cfg.sampling, "sampling", build_diffusion(stored))


def validate_resume(module, ckpt_path) -> int:
    """Before resuming from ``ckpt_path``: its weights fit this run's network (else a ConfigError naming the
    config keys that differ from the ones it was trained with, instead of hundreds of size mismatches).
    Returns the checkpoint's global step."""
    from omegaconf import OmegaConf

    from ..lightning.checkpointing import peek_checkpoint

    checkpoint = peek_checkpoint(ckpt_path)
    saved = checkpoint.get("state_dict") or {}
    expected = module.state_dict()
    mismatched = [
        name
        for name in sorted(set(saved) | set(expected))
        if name not in saved or name not in expected or tuple(saved[name].shape) != tuple(expected[name].shape)
    ]
    if mismatched:
        stored_yaml = (checkpoint.get("ddpm_lab") or {}).get("config")
        changes = []
        if stored_yaml and module.run_config:
            stored, current = (OmegaConf.to_container(OmegaConf.create(y)) for y in (stored_yaml, module.run_config))
            for section in ("model", "diffusion", "process", "data", "conditioning"):
                changes += config_differences(stored.get(section), current.get(section), section)
        said = "; ".join(changes[:8]) or "no config difference found (a checkpoint of another program?)"
        raise ConfigError(
            f"ckpt_path={ckpt_path} does not fit this run's network: {len(mismatched)} weights differ in shape or "
            f"are missing (e.g. {mismatched[0]}). The checkpoint was trained with other settings ({said}). Resume "
            "with the settings it was trained with (drop those overrides), or start a new run without ckpt_path."
        )
    return int(checkpoint.get("global_step", 0))
