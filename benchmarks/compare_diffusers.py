"""Side by side, in one process and one run: ddpm-lab vs diffusers on the same workload.

    python benchmarks/compare_diffusers.py                       # CPU default: 32x32x3, width 64, mults 1,2,2,2,
                                                                 # attention at 16x16, batch 16, fp32
    python benchmarks/compare_diffusers.py --base 128 --batch-size 128 --precision bf16-mixed --device cuda

Training step (both): eps-prediction MSE on q_sample'd inputs, AdamW, gradient clipping at 1.0 and an EMA update;
ddpm-lab runs it as the full DiffusionModule Lightning step, diffusers as a plain PyTorch loop with
UNet2DModel + DDPMScheduler.add_noise + EMAModel. Sampling (both): ancestral DDPM over the same number of
respaced steps. Needs the optional extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ddpm_lab.bench import (
    AUTOCAST,
    WindowTimer,
    _sync,
    add_workload_args,
    bench_lightning,
    bench_sampling,
    timing_window,
)


def diffusers_unet(args: argparse.Namespace):
    from diffusers import UNet2DModel

    widths = tuple(args.base * m for m in args.mults)
    resolutions = [args.image_size // 2**i for i in range(len(args.mults))]
    down = tuple("AttnDownBlock2D" if r in args.attention else "DownBlock2D" for r in resolutions)
    up = tuple("AttnUpBlock2D" if r in args.attention else "UpBlock2D" for r in reversed(resolutions))
    # One attention head spanning all channels at the attention level, as in the DDPM U-Net.
    head_dim = next((w for w, r in zip(widths, resolutions, strict=True) if r in args.attention), widths[0])
    return UNet2DModel(
        sample_size=args.image_size,
        in_channels=args.channels,
        out_channels=args.channels,
        layers_per_block=args.res_blocks,
        block_out_channels=widths,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=head_dim,
        dropout=0.0,
    )


def bench_diffusers(args: argparse.Namespace, device: torch.device) -> dict:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    unet = diffusers_unet(args).to(device)
    ema = EMAModel(unet.parameters(), decay=0.9999)
    scheduler = DDPMScheduler(num_train_timesteps=args.timesteps, beta_schedule="linear")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-4)
    data = torch.rand(args.batch_size, args.channels, args.image_size, args.image_size, device=device) * 2 - 1
    dtype = AUTOCAST[args.precision]
    window = timing_window(args, device)
    timer = WindowTimer(args.warmup, window, device)  # timed as ddpm-lab's step is
    for _ in range(args.warmup + args.repeats * window):
        timer.step_start()
        noise = torch.randn_like(data)
        t = torch.randint(0, args.timesteps, (args.batch_size,), device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            pred = unet(scheduler.add_noise(data, noise, t), t).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        ema.step(unet.parameters())
        timer.step_end()
    step = statistics.median(timer.times)
    unet.eval()
    scheduler.set_timesteps(args.sample_steps)
    sample_times = []
    with torch.no_grad():
        for i in range(1 + args.sample_repeats):
            generator = torch.Generator(device=device).manual_seed(i)
            _sync(device)
            start = time.perf_counter()
            x = torch.randn(
                args.sample_batch, args.channels, args.image_size, args.image_size, generator=generator, device=device
            )
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                for timestep in scheduler.timesteps:
                    x = scheduler.step(unet(x, timestep).sample, timestep, x, generator=generator).prev_sample
            _sync(device)
            if i >= 1:
                sample_times.append(time.perf_counter() - start)
    return {
        "parameters": sum(p.numel() for p in unet.parameters()),
        "train_images_per_s": args.batch_size / step,
        "sample_images_per_s": args.sample_batch / statistics.median(sample_times),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=int, default=64)
    p.add_argument("--mults", type=int, nargs="+", default=[1, 2, 2, 2])
    p.add_argument("--res-blocks", type=int, default=2)
    p.add_argument("--attention", type=int, nargs="*", default=[16])
    p.add_argument(
        "--diffusers-precision",
        choices=sorted(AUTOCAST),
        help="diffusers' loop precision (default: --precision; its example trains in fp32)",
    )
    add_workload_args(p, device="cpu")
    args = p.parse_args(argv)
    try:
        import diffusers
    except ImportError:
        print("compare_diffusers.py needs diffusers: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    # ddpm-lab's UNet class with this workload's widths (unet_cifar10 with overrides), as a DiffusionModule.
    ours_args = argparse.Namespace(
        **vars(args),
        model="unet_cifar10",
        model_overrides={
            "base_channels": args.base,
            "channel_mults": args.mults,
            "num_res_blocks": args.res_blocks,
            "attention_resolutions": args.attention,
            "dropout": 0.0,
        },
        fused="auto",  # ddpm-lab's default (module.fused_optimizer=auto); diffusers' example uses plain AdamW
    )
    ours = bench_lightning(ours_args, device)
    module = ours.pop("module")
    ours_sampling = bench_sampling(module, ours_args, device)
    theirs = bench_diffusers(
        argparse.Namespace(**{**vars(args), "precision": args.diffusers_precision or args.precision}), device
    )
    ours_params = sum(p.numel() for p in module.network.parameters())
    result = {
        "workload": vars(args),
        "device": str(device),
        "torch": torch.__version__,
        "diffusers_version": diffusers.__version__,
        "ddpm_lab": {
            "parameters": ours_params,
            "train_images_per_s": ours["images_per_s"],
            "sample_images_per_s": ours_sampling[f"ddpm_respaced_{args.sample_steps}_images_per_s"],
        },
        "diffusers": theirs,
    }
    result["parameter_ratio"] = ours_params / theirs["parameters"]
    result["train_speedup"] = result["ddpm_lab"]["train_images_per_s"] / theirs["train_images_per_s"]
    result["sample_speedup"] = result["ddpm_lab"]["sample_images_per_s"] / theirs["sample_images_per_s"]
    print(json.dumps(result, indent=2, default=str))
    print(
        f"\nparameters: ddpm-lab {ours_params / 1e6:.2f}M, diffusers {theirs['parameters'] / 1e6:.2f}M "
        f"(ratio {result['parameter_ratio']:.3f})"
    )
    print(
        f"train  images/s: ddpm-lab {result['ddpm_lab']['train_images_per_s']:.1f}, diffusers "
        f"{theirs['train_images_per_s']:.1f}  -> {result['train_speedup']:.2f}x"
    )
    print(
        f"sample images/s: ddpm-lab {result['ddpm_lab']['sample_images_per_s']:.2f}, diffusers "
        f"{theirs['sample_images_per_s']:.2f}  -> {result['sample_speedup']:.2f}x"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
