"""``ddpm-eval``: metrics of a checkpoint: validation loss terms, FID/KID/IS (50k samples by default) and
NLL bits/dim on the test split for images, the sample distance for 2-D data; written to
``eval_metrics.json`` (with the FID protocol) in the output dir."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ..run_record import read_summary, write_summary
from . import CONFIG_DIR
from .checkpoint_validation import posthoc_snapshot_dir, validate_eval_config
from .common import answer_version, report_config_errors, resolve_device
from .run_identity import arm_fingerprint, task_overrides

# Lightning, the diffusion and the builders are imported inside evaluate(), after the config is validated:
# `ddpm-eval --help` and a config error answer without them.

log = logging.getLogger(__name__)
# The evaluation settings that do not make another arm (the sampler, steps and weights do: choices/protocol).
EVAL_NOT_ARM = ("seed", "ckpt_path", "paths", "hydra", "task_name", "device", "limit_batches", "data")


def training_arm(ckpt_path: str, run_cfg: DictConfig) -> str:
    """The arm of the run that wrote the checkpoint: from its record (<run>/checkpoints/x.ckpt ->
    <run>/metrics.json), else from the config the checkpoint carries, with its per-run directory left out."""
    record = read_summary(Path(ckpt_path).resolve().parent.parent) or {}
    if record.get("arm"):
        return str(record["arm"])
    stored = OmegaConf.create(OmegaConf.to_container(run_cfg))
    stored.trainer.pop("default_root_dir", None)
    return arm_fingerprint(stored)


def load_posthoc_ema(cfg: DictConfig, module) -> dict | None:
    """With ema.posthoc_std: rebuild that EMA at the checkpoint's step from the run's snapshots and load it
    as the module's EMA weights. Returns what was rebuilt (for the record), or None."""
    std = (cfg.get("ema") or {}).get("posthoc_std")
    if std is None:
        return None
    from ..lightning.checkpointing import peek_checkpoint
    from ..lightning.posthoc_ema import tracked_emas
    from ..models.posthoc_ema import MAX_PROFILE_ERROR, reconstruct

    checkpoint = peek_checkpoint(cfg.ckpt_path)
    step = int(checkpoint.get("global_step", 0))
    rebuilt = reconstruct(posthoc_snapshot_dir(cfg), step, sigma_rel=float(std), tracked=tracked_emas(checkpoint))
    module.ema.module.load_state_dict(rebuilt.state_dict)
    log.info(
        f"post-hoc EMA sigma_rel={std} at step {step} from {rebuilt.snapshots} snapshots "
        f"(profile error {rebuilt.profile_error:.2g})"
    )
    return {
        "sigma_rel": float(std),
        "step": step,
        "snapshots": rebuilt.snapshots,
        "profile_error": rebuilt.profile_error,
        "max_profile_error": MAX_PROFILE_ERROR,
    }


def evaluate(cfg: DictConfig) -> dict:
    validate_eval_config(cfg)
    import lightning as L

    from ..diffusion import resolve_sampling
    from ..lightning import FIDCallback, MetricsRecordLogger, SampleDistanceCallback
    from ..lightning.evaluation import EvaluateAtValidationEnd
    from ..provenance import code_provenance
    from .builders import build_callbacks, build_datamodule, module_from_checkpoint

    device = resolve_device(cfg.device)
    module, run_cfg = module_from_checkpoint(cfg.ckpt_path)
    if not cfg.use_ema:
        module.ema.module.load_state_dict(module.network.state_dict())
    posthoc = load_posthoc_ema(cfg, module)
    module.sampling = resolve_sampling(module.sampling, cfg.get("sampling") or {})
    run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.data or {})
    datamodule = build_datamodule(run_cfg)
    L.seed_everything(cfg.seed, verbose=False)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if getattr(datamodule, "kind", "image") == "points":
        callbacks = [SampleDistanceCallback(**cfg.get("sample_distance", {}))]
    else:
        callbacks = [
            *build_callbacks(OmegaConf.create({"metrics": OmegaConf.to_container(cfg.metrics, resolve=True)})),
            EvaluateAtValidationEnd(),
        ]
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        logger=MetricsRecordLogger(out),
        callbacks=callbacks,
        limit_val_batches=cfg.limit_batches if cfg.limit_batches is not None else 1.0,
        enable_model_summary=False,
    )
    trainer.validate(module, datamodule=datamodule, verbose=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    fid = next((c for c in callbacks if isinstance(c, FIDCallback)), None)
    protocol = fid.last_protocol if fid else None
    if protocol and posthoc:  # rebuilt weights are their own yardstick: never ranked with the tracked EMA's
        protocol = {**protocol, "weights": "posthoc_ema", "posthoc_ema": posthoc}
    record = {
        "code": code_provenance(device),
        "ckpt_path": str(cfg.ckpt_path),
        "use_ema": cfg.use_ema,
        "posthoc_ema": posthoc,
        "metrics": metrics,
        "fid_protocol": protocol,
    }
    (out / "eval_metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info(f"evaluated {cfg.ckpt_path}: {out / 'eval_metrics.json'}")
    # A metrics.json like training's, so that ddpm-leaderboard ranks evaluation sweeps (e.g. sampler steps).
    sampling = resolve_sampling(module.sampling, fid.sampling if fid else {})
    steps = sampling["steps"] or module.diffusion.num_timesteps  # continuous objectives always have steps
    trained_choices = (read_summary(Path(cfg.ckpt_path).resolve().parent.parent) or {}).get("choices") or {}
    write_summary(
        out,
        status="completed",
        choices={
            "sampler": sampling["sampler"],
            "steps": steps,
            "spacing": sampling["spacing"],
            "eta": sampling["eta"],
            "nfe": module.diffusion.model_evaluations(sampling["sampler"], steps),
            # the checkpoint's objective (its run's process choice, e.g. ddpm_v): an NFE sweep over checkpoints
            # of several objectives draws one curve per objective
            "process": trained_choices.get("process") or module.diffusion.objective,
            **({"ema_std": posthoc["sigma_rel"]} if posthoc else {}),
        },
        protocol_subject=["sampler", "sampler_steps", "eta", "spacing", "nfe"],  # what ddpm-eval sweeps compare
        # One arm: the checkpoint's training config (not its seed) under this evaluation's settings (not its
        # seed), so that checkpoints of several training seeds, or several sampling seeds, are one arm.
        arm=f"{training_arm(cfg.ckpt_path, run_cfg)}-{arm_fingerprint(cfg, leave_out=EVAL_NOT_ARM)}",
        seed=f"{run_cfg.get('seed')}:{cfg.seed}",  # training seed : sampling seed
        overrides=task_overrides(("seed", "ckpt_path")),
        ckpt_path=str(cfg.ckpt_path),
        fid_protocol=record["fid_protocol"],
        code=record["code"],
        # what ddpm-leaderboard ranks these records by default: the headline of what this evaluation measured
        headline_metric=next((m for m in ("val/sample_distance", "val/fid", "val/loss") if m in metrics), None),
    )
    return record


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
@report_config_errors("ddpm-eval")
def hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    answer_version("ddpm-eval")
    hydra_main()


if __name__ == "__main__":
    main()
