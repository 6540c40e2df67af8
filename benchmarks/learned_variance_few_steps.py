"""Does IDDPM's learned variance help at few respaced steps (Nichol & Dhariwal 2021, sec. 4)? Trains the
quickstart (digits at 8x8, unet_tiny, linear T=1000) with +variance_loss=learned_range_hybrid and
fixed_large_mse for --steps optimizer steps and --seeds seeds, samples 500 images from the EMA weights with
respaced ancestral DDPM at 10 and 25 steps, and reports the pixel-space MMD^2 x 1e3 to the training digits (RBF
kernel, median bandwidth, unbiased), mean +- std over seeds and Welch's p per step count.

    python benchmarks/learned_variance_few_steps.py --out /tmp/lv --seeds 3   # ~25 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from scipy import stats

from ddpm_lab.cli import CONFIG_DIR
from ddpm_lab.cli.builders import build_datamodule, module_from_checkpoint
from ddpm_lab.cli.train import train
from ddpm_lab.metrics import mmd_squared

ARMS = ("learned_range_hybrid", "fixed_large_mse")
SAMPLER_STEPS = (10, 25)


def mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """ddpm-lab's unbiased MMD^2 with one Gaussian kernel exp(-d^2 / median_y d^2) (the median heuristic)."""
    median = float((torch.cdist(y, y) ** 2).median())
    return mmd_squared(x, y, bandwidths=((median / 2) ** 0.5,))


def measure(arm: str, seed: int, steps: int, out: Path, num_samples: int = 500) -> dict[str, float]:
    overrides = [
        f"paths.root_dir={out}",
        f"paths.output_dir={out}/run",
        "data.image_size=8",
        f"trainer.max_steps={steps}",
        f"seed={seed}",
        f"+variance_loss={arm}",
        "logger=csv",
        "metrics=none",
        "trainer.enable_progress_bar=false",
        "trainer.val_check_interval=400",
        "callbacks.sample_images.every_n_steps=100000",
        "callbacks.sample_images.num_samples=4",  # the end-of-run pictures are not what is measured
        "sampling.steps=10",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=overrides)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    train(cfg)
    module, run_cfg = module_from_checkpoint(out / "run" / "checkpoints" / "last.ckpt")
    images = build_datamodule(run_cfg).images("train")
    data = torch.stack([images[i] for i in range(len(images))]).double().reshape(len(images), -1) / 127.5 - 1
    result = {}
    for k in SAMPLER_STEPS:
        generator = torch.Generator().manual_seed(1234)
        samples = module.generate(num_samples, generator=generator, use_ema=True, sampler="ddpm", steps=k)
        result[f"mmd2x1e3_{k}"] = 1e3 * mmd2(samples.double().reshape(num_samples, -1).clamp(-1, 1), data)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="where the runs go")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=800, help="optimizer steps per run")
    args = p.parse_args()
    results = {
        (arm, seed): measure(arm, seed, args.steps, Path(args.out) / f"{arm}_{seed}")
        for arm in ARMS
        for seed in range(args.seeds)
    }
    print(json.dumps({f"{arm}/{seed}": r for (arm, seed), r in results.items()}, indent=1))
    for k in SAMPLER_STEPS:
        values = {arm: [results[arm, s][f"mmd2x1e3_{k}"] for s in range(args.seeds)] for arm in ARMS}
        cells = [f"{arm} {np.mean(v):.1f} +- {np.std(v, ddof=1):.1f}" for arm, v in values.items()]
        p_value = stats.ttest_ind(*values.values(), equal_var=False).pvalue
        print(f"{k} steps: {' vs '.join(cells)} (Welch p = {p_value:.2g})")


if __name__ == "__main__":
    main()
