"""How many samples of an image checkpoint are speckled (salt-and-pepper noise on the digit), per sampler, with
EMA and with raw weights. A sample is speckled when its total variation (mean absolute difference of horizontal
and vertical neighbours) exceeds the largest of 500 real training images: no real image is, pure noise always is.

Found on the quickstart (README, "Sampling and evaluation"): deterministic samplers on a briefly trained network.

    python benchmarks/speckled_samples.py <run>/checkpoints/step_0001000.ckpt <run>/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse

import torch

from ddpm_lab.cli.builders import build_datamodule, module_from_checkpoint
from ddpm_lab.diffusion.noise import per_sample_generators

# (label, generate() keywords): deterministic samplers at several step counts, and the stochastic ones.
SETTINGS = (
    ("ddim 10", {"sampler": "ddim", "steps": 10}),
    ("ddim 50", {"sampler": "ddim", "steps": 50}),
    ("dpmpp_2m 15 trailing", {"sampler": "dpmpp_2m", "steps": 15, "spacing": "trailing"}),
    ("heun 10 trailing", {"sampler": "heun", "steps": 10, "spacing": "trailing"}),
    ("ddim 50 eta=1", {"sampler": "ddim", "steps": 50, "eta": 1.0}),
    ("ddpm 250", {"sampler": "ddpm", "steps": 250}),
)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """(N,) mean absolute difference between neighbouring pixels of images (N, C, H, W) in [-1, 1]."""
    return (images[..., 1:, :] - images[..., :-1, :]).abs().mean((1, 2, 3)) + (
        images[..., :, 1:] - images[..., :, :-1]
    ).abs().mean((1, 2, 3))


def speckle_threshold(real: torch.Tensor) -> float:
    return float(total_variation(real).max())


def count_speckled(checkpoint: str, num_samples: int = 64, settings=SETTINGS) -> dict[str, tuple[int, int]]:
    """{setting: (speckled with EMA weights, speckled with raw weights)} of ``num_samples`` samples, image i from
    seed (0, i), with the run's clip_denoised."""
    module, cfg = module_from_checkpoint(checkpoint)
    images = build_datamodule(cfg).images("train")
    real = torch.stack([images[i] for i in range(min(500, len(images)))]).float() / 127.5 - 1
    limit = speckle_threshold(real)
    counts = {}
    for label, options in settings:
        row = []
        for use_ema in (True, False):
            generators = per_sample_generators(0, range(num_samples), torch.device("cpu"))
            samples = module.generate(num_samples, generator=generators, use_ema=use_ema, **options)
            row.append(int((total_variation(samples) > limit).sum()))
        counts[label] = tuple(row)
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--num-samples", type=int, default=64)
    args = p.parse_args()
    for checkpoint in args.checkpoints:
        for label, (ema, raw) in count_speckled(checkpoint, args.num_samples).items():
            print(f"{checkpoint}  {label:22s} speckled: EMA {ema}/{args.num_samples}, raw {raw}/{args.num_samples}")


if __name__ == "__main__":
    main()
