"""``ddpm-eval``: metrics of a checkpoint: validation loss terms, FID/KID/IS (50k samples by default) and
NLL bits/dim on the test split for images, the sample distance for 2-D data; written to
``eval_metrics.json`` (with the FID protocol) in the output dir."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from ..diffusion import model_evaluations
from ..lightning import FIDCallback, MetricsRecordLogger, SampleDistanceCallback, write_summary
from ..lightning.evaluation import PeriodicEvaluation
from . import CONFIG_DIR
from .builders import build_callbacks, build_datamodule, module_from_checkpoint
from .checkpoint_validation import validate_eval_config
from .common import resolve_device


class _EvaluateAtEnd(L.Callback):
    """Runs the FID/NLL callbacks' measurements once, after the validation pass."""

    def on_validation_end(self, trainer, pl_module) -> None:
        for callback in trainer.callbacks:
            if isinstance(callback, PeriodicEvaluation):
                callback.evaluate(trainer, pl_module)


def evaluate(cfg: DictConfig) -> dict:
    validate_eval_config(cfg)
    device = resolve_device(cfg.device)
    module, run_cfg = module_from_checkpoint(cfg.ckpt_path)
    if not cfg.use_ema:
        module.ema.module.load_state_dict(module.network.state_dict())
    module.sampling.update({k: v for k, v in (cfg.get("sampling") or {}).items() if v is not None})
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
            _EvaluateAtEnd(),
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
    record = {
        "ckpt_path": str(cfg.ckpt_path),
        "use_ema": cfg.use_ema,
        "metrics": metrics,
        "fid_protocol": fid.last_protocol if fid else None,
    }
    (out / "eval_metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    # A metrics.json like training's, so that ddpm-leaderboard ranks evaluation sweeps (e.g. sampler steps).
    sampling = {**module.sampling, **{k: v for k, v in (fid.sampling if fid else {}).items() if v is not None}}
    steps = sampling["steps"] or module.diffusion.num_timesteps
    write_summary(
        out,
        status="completed",
        choices={
            "sampler": sampling["sampler"],
            "steps": steps,
            "spacing": sampling["spacing"],
            "eta": sampling["eta"],
            "nfe": model_evaluations(sampling["sampler"], steps),
        },
        protocol_subject=["sampler", "sampler_steps", "eta", "spacing", "nfe"],  # what ddpm-eval sweeps compare
        ckpt_path=str(cfg.ckpt_path),
        fid_protocol=record["fid_protocol"],
    )
    return record


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
