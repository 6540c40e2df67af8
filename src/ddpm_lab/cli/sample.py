"""``ddpm-sample``: draw N samples from a checkpoint (EMA weights by default) and write a PNG grid, an .npz
(``arr_0``: uint8 NHWC images, as openai/guided-diffusion's evaluator reads; float points for 2-D data) and
optionally one PNG per image. Sample i is drawn from its own seed (``seed``, i), so any batch size gives the
same samples."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from . import CONFIG_DIR
from .checkpoint_validation import validate_sample_config
from .common import answer_version, report_config_errors, resolve_device


def sample(cfg: DictConfig) -> dict:
    validate_sample_config(cfg)
    # Imported once the config is valid: `ddpm-sample --help` and a config error answer without Lightning.
    import numpy as np
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from ..diffusion import balanced_labels, resolve_sampling
    from ..diffusion.noise import per_sample_generators
    from ..visualize import save_image_grid, save_points_figure, to_uint8
    from .builders import build_datamodule, module_from_checkpoint

    device = resolve_device(cfg.device)
    module, run_cfg = module_from_checkpoint(cfg.ckpt_path, map_location=device)
    module.to(device)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    overrides = {k: cfg.sampling.get(k) for k in ("sampler", "steps", "eta", "spacing", "guidance_scale")}
    # A class-conditional model: every class equally often over the whole run (not per batch); the labels go
    # into samples.npz as arr_1, as in openai's guided-diffusion.
    labels = None if module.num_classes is None else balanced_labels(cfg.num_samples, module.num_classes)
    batches = []
    for start in tqdm(range(0, cfg.num_samples, cfg.batch_size), desc="batches", disable=not cfg.progress):
        n = min(cfg.batch_size, cfg.num_samples - start)
        batch_labels = None if labels is None else labels[start : start + n]
        # Sample i from its own seed (seed, i): the same images whatever batch_size (as FID's sample sets).
        generators = per_sample_generators(cfg.seed, range(start, start + n), device)
        batches.append(
            module.generate(
                n, generator=generators, use_ema=cfg.use_ema, progress=cfg.progress, labels=batch_labels, **overrides
            ).cpu()
        )
    samples = torch.cat(batches)
    arrays = {} if labels is None else {"arr_1": labels.numpy()}
    if samples.ndim == 4:
        pixels = to_uint8(samples).permute(0, 2, 3, 1).numpy()
        np.savez(out / "samples.npz", arr_0=pixels, **arrays)
        scale = max(1, 64 // samples.shape[-1])
        save_image_grid(samples[:256], out / "samples.png", nrow=module.num_classes, scale=scale)
        if cfg.save_pngs:
            (out / "images").mkdir(exist_ok=True)
            for i, image in enumerate(pixels):
                Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
                    out / "images" / f"{i:06d}.png"
                )
    else:
        np.savez(out / "samples.npz", arr_0=samples.numpy())
        reference = build_datamodule(run_cfg).points("test")
        save_points_figure(samples, reference, out / "samples.png", title=f"{len(samples)} samples over test data")
    record = {
        "ckpt_path": str(cfg.ckpt_path),
        "num_samples": len(samples),
        "use_ema": cfg.use_ema,
        "seed": cfg.seed,
        **resolve_sampling(module.sampling, overrides),
    }
    (out / "samples.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {len(samples)} samples to {out}/samples.npz and {out}/samples.png")
    return record


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="sample")
@report_config_errors("ddpm-sample")
def hydra_main(cfg: DictConfig) -> None:
    sample(cfg)


def main() -> None:
    answer_version("ddpm-sample")
    hydra_main()


if __name__ == "__main__":
    main()
