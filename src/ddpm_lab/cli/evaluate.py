"""``ddpm-eval``: validation metrics of a checkpoint (loss terms with EMA weights; sample distance for 2-D
data), written to ``eval_metrics.json`` in the run dir."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from ..lightning import SampleDistanceCallback
from . import CONFIG_DIR
from .builders import build_datamodule, module_from_checkpoint
from .common import resolve_device


def evaluate(cfg: DictConfig) -> dict:
    device = resolve_device(cfg.device)
    module, run_cfg = module_from_checkpoint(cfg.ckpt_path)
    if not cfg.use_ema:
        module.ema.module.load_state_dict(module.network.state_dict())
    run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.data or {})
    datamodule = build_datamodule(run_cfg)
    L.seed_everything(cfg.seed, verbose=False)
    callbacks = [SampleDistanceCallback()] if getattr(datamodule, "kind", "image") == "points" else []
    trainer = L.Trainer(accelerator=device.type, devices=1, logger=False, callbacks=callbacks,
                        limit_val_batches=cfg.limit_batches if cfg.limit_batches is not None else 1.0)
    metrics = trainer.validate(module, datamodule=datamodule, verbose=True)[0]
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"ckpt_path": str(cfg.ckpt_path), "use_ema": cfg.use_ema, "metrics": metrics}
    (out / "eval_metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
