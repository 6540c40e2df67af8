"""``ddpm-bench``: training and sampling throughput of a model preset, and the Lightning overhead.

    ddpm-bench --model unet_cifar10 --batch-size 128 --precision bf16-mixed --channels-last --compile
    ddpm-bench --model unet_tiny --image-size 16 --channels 1 --batch-size 64 --json bench.json

Training: the whole Lightning step (forward, loss, backward, optimiser, EMA) of ``DiffusionModule`` on
synthetic data, timed per step by a callback (CUDA-synchronised), against a bare PyTorch loop doing the same
work on the same network. Sampling: images/s of DDPM respaced and DDIM at ``--sample-steps`` and of full
DDPM (T steps, from the per-step time). Warm-up steps are excluded; figures are medians of the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from .cli import CONFIG_DIR
from .cli.common import resolve_device, version_line
from .diffusion import build_gaussian_diffusion
from .lightning import DiffusionModule
from .lightning.fast_paths import COMPILE_MODES
from .profiling import profile_steps
from .profiling import synchronize as _sync

AUTOCAST = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class _Synthetic(Dataset):
    def __init__(self, shape: tuple[int, ...], length: int) -> None:
        self.data = torch.rand(length, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        self.shape = shape

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]


class WindowTimer(L.Callback):
    """Seconds per step, over windows of ``window`` steps after ``warmup`` steps.

    The device is synchronised only at the edges of a window, so inside it the host queues work ahead of the GPU
    as in real training: per-step host work (Lightning's hooks, data loading) costs time only where it is not
    hidden behind device work. ``times`` holds one figure per window: its seconds divided by ``window``.
    """

    def __init__(self, warmup: int, window: int, device: torch.device) -> None:
        self.warmup, self.window, self.device = warmup, window, device
        self.times: list[float] = []
        self._step = 0
        self._start = 0.0

    def step_start(self) -> None:
        offset = self._step - self.warmup
        if offset >= 0 and offset % self.window == 0:
            _sync(self.device)
            self._start = time.perf_counter()

    def step_end(self) -> None:
        offset = self._step - self.warmup
        self._step += 1
        if offset >= 0 and (offset + 1) % self.window == 0:
            _sync(self.device)
            self.times.append((time.perf_counter() - self._start) / self.window)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.step_start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.step_end()


def timing_window(args: argparse.Namespace, device: torch.device) -> int:
    return args.window or (10 if device.type == "cuda" else 1)


def build(args: argparse.Namespace) -> tuple[DiffusionModule, tuple[int, ...]]:
    shape = (args.channels, args.image_size, args.image_size)
    # A model config preset, with optional overrides (compare_diffusers.py sets its workload's widths).
    model_cfg = OmegaConf.merge(
        OmegaConf.load(CONFIG_DIR / "model" / f"{args.model}.yaml"),
        OmegaConf.from_dotlist(getattr(args, "set", None) or []),
        getattr(args, "model_overrides", None) or {},
    )
    torch.manual_seed(0)
    network = instantiate(model_cfg, sample_shape=list(shape), learned_variance=False)
    diffusion = build_gaussian_diffusion("linear", args.timesteps)
    optimizer = instantiate({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 2e-4})
    module = DiffusionModule(
        network,
        diffusion,
        optimizer,
        shape,
        lr_warmup_steps=0,
        ema_decay=0.9999,
        channels_last=args.channels_last,
        compile_network=args.compile,
        compile_mode=args.compile_mode,
        fused_optimizer={"on": True, "off": False}.get(args.fused, "auto"),
    )
    return module, shape


def bench_lightning(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    module, shape = build(args)
    window = timing_window(args, device)
    steps = args.warmup + args.repeats * window
    loader = DataLoader(
        _Synthetic(shape, args.batch_size * steps),
        batch_size=args.batch_size,
        drop_last=True,
        pin_memory=device.type == "cuda",  # as the DataModules do: the host-to-device copy is then asynchronous
    )
    timer = WindowTimer(args.warmup, window, device)
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        precision=args.precision,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=1.0,  # as conf/trainer/default.yaml, the bare loop and compare_diffusers.py
        benchmark=device.type == "cuda",  # cuDNN autotuning, as conf/trainer/gpu.yaml
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer.fit(module, train_dataloaders=loader)
    step = statistics.median(timer.times)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"step_s": step, "images_per_s": args.batch_size / step, "peak_memory_mib": peak, "module": module}


def bench_bare_loop(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The same work as the Lightning step, written as a plain loop (the overhead baseline)."""
    module, shape = build(args)
    module.to(device)
    module.setup("fit")  # the module's own network preparation: channels_last layout, torch.compile
    network, diffusion, call = module.network, module.diffusion, module._train_network
    optimizer = torch.optim.AdamW(network.parameters(), lr=2e-4, **module.fused_optimizer_kwargs())
    data = _Synthetic(shape, args.batch_size).data.to(device)
    if module._fast(module.channels_last):
        data = data.contiguous(memory_format=torch.channels_last)
    dtype = AUTOCAST[args.precision]

    def train_step() -> None:
        t = torch.randint(0, diffusion.num_timesteps, (args.batch_size,), device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = diffusion.training_losses(call, data, t)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        module.ema.update(network)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    window = timing_window(args, device)
    timer = WindowTimer(args.warmup, window, device)
    for _ in range(args.warmup + args.repeats * window):
        timer.step_start()
        train_step()
        timer.step_end()
    step = statistics.median(timer.times)
    result: dict[str, Any] = {"step_s": step, "images_per_s": args.batch_size / step}
    if getattr(args, "profile", False):
        result["profile"] = profile_steps(train_step, device, window)
    return result


@torch.no_grad()
def bench_sampling(module: DiffusionModule, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    module.to(device).eval()
    dtype = AUTOCAST[args.precision]
    out = {}
    for name, sampler, steps in [("ddpm_respaced", "ddpm", args.sample_steps), ("ddim", "ddim", args.sample_steps)]:
        times = []
        for i in range(1 + args.sample_repeats):
            generator = torch.Generator(device=device).manual_seed(i)
            _sync(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                module.generate(args.sample_batch, generator=generator, sampler=sampler, steps=steps)
            _sync(device)
            if i >= 1:  # the first run is warm-up
                times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        out[f"{name}_{steps}_images_per_s"] = args.sample_batch / seconds
        out[f"{name}_{steps}_step_s"] = seconds / steps
    out[f"ddpm_full_{args.timesteps}_images_per_s_estimated"] = args.sample_batch / (
        out[f"ddpm_respaced_{args.sample_steps}_step_s"] * args.timesteps
    )
    return out


def training_flops(args: argparse.Namespace, device: torch.device) -> float:
    """FLOPs of one training step's forward + backward of the network (torch's FLOP counter: convs, matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    module, shape = build(args)
    network = module.network.to(device)
    x = torch.randn(args.batch_size, *shape, device=device)
    t = torch.randint(0, args.timesteps, (args.batch_size,), device=device)
    with FlopCounterMode(display=False) as counter:
        network(x, t).square().mean().backward()
    return float(counter.get_total_flops())


def matmul_rate(
    device: torch.device, dtype: torch.dtype = torch.bfloat16, size: int = 8192, repeats: int = 20
) -> float:
    """Measured dense matmul FLOP/s of this device in ``dtype`` (the MFU denominator)."""
    if device.type != "cuda":
        size, repeats = 1024, 10
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def add_workload_args(p: argparse.ArgumentParser, device: str = "auto") -> argparse.ArgumentParser:
    """The workload and timing flags shared by ddpm-bench and benchmarks/compare_diffusers.py."""
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", default="32-true", choices=sorted(AUTOCAST))
    p.add_argument("--channels-last", action="store_true", help="ddpm-lab's channels_last fast path")
    p.add_argument("--compile", action="store_true", help="torch.compile the network(s)")
    p.add_argument("--compile-mode", default="default", choices=COMPILE_MODES, help="torch.compile's mode")
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10, help="timed windows (the figure is their median)")
    p.add_argument(
        "--window",
        type=int,
        default=0,
        help="training steps per timed window, synchronised only at its edges (0: 10 on CUDA, 1 on CPU)",
    )
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--sample-batch", type=int, default=16)
    p.add_argument("--sample-repeats", type=int, default=3)
    p.add_argument("--device", default=device)
    p.add_argument("--json", help="write the results to this file")
    return p


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddpm-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line("ddpm-bench"))
    p.add_argument("--model", default="unet_tiny", help="a model config preset (unet_*)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an option of the model preset (repeatable), e.g. --set base_channels=64 --set dropout=0",
    )
    add_workload_args(p)
    p.add_argument(
        "--fused",
        choices=("auto", "on", "off"),
        default="auto",
        help="fused AdamW: auto (the default of module.fused_optimizer: on where torch has the kernel, CUDA and "
        "CPU), on, off",
    )
    p.add_argument("--skip", default="", help="comma list of parts to skip: bare,sample")
    p.add_argument("--profile", action="store_true", help="profile the bare loop: device time by kernel family")
    p.add_argument(
        "--mfu",
        action="store_true",
        help="model-FLOPs utilisation against the matmul rate, in the run's precision, measured in the same run",
    )
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:

    device = resolve_device(args.device)
    lightning = bench_lightning(args, device)
    module = lightning.pop("module")
    result: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "lightning": L.__version__,
        "parameters": sum(p.numel() for p in module.network.parameters()),
        "train_lightning": lightning,
    }
    skip = set(filter(None, args.skip.split(",")))
    if "bare" not in skip:
        bare = bench_bare_loop(args, device)
        result["train_bare_loop"] = bare
        result["lightning_overhead"] = lightning["step_s"] / bare["step_s"] - 1.0
    if "sample" not in skip:
        result["sampling"] = bench_sampling(module, args, device)
    if args.mfu:
        # Against the dense matmul rate of the precision the network computes in (bf16 under bf16-mixed).
        dtype = AUTOCAST[args.precision] or torch.float32
        flops, rate = training_flops(args, device), matmul_rate(device, dtype)
        result["mfu"] = {
            "train_flops_per_step": flops,
            "matmul_dtype": str(dtype).removeprefix("torch."),
            "matmul_flops_per_s": rate,
            "mfu": flops / lightning["step_s"] / rate,
        }
    return result


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"ddpm-bench: {result['config']['model']} ({result['parameters'] / 1e6:.1f}M), "
        f"batch {result['config']['batch_size']}, {result['config']['precision']}, {result['device']}"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("train images/s (DiffusionModule step)", f"{result['train_lightning']['images_per_s']:.1f}")
    if "train_bare_loop" in result:
        table.add_row("train images/s (bare loop)", f"{result['train_bare_loop']['images_per_s']:.1f}")
        table.add_row("Lightning overhead per step", f"{100 * result['lightning_overhead']:+.1f}%")
    if result["train_lightning"]["peak_memory_mib"] is not None:
        table.add_row("peak GPU memory (MiB)", f"{result['train_lightning']['peak_memory_mib']:.0f}")
    if "mfu" in result:
        mfu = result["mfu"]
        table.add_row(f"model FLOPs utilisation (vs measured {mfu['matmul_dtype']} matmul)", f"{100 * mfu['mfu']:.1f}%")
    profile = result.get("train_bare_loop", {}).get("profile")
    if profile:
        for family, ms in profile["ms_per_step_by_family"].items():
            table.add_row(f"bare-loop step time: {family} (ms/step)", f"{ms:.2f}")
    for key, value in result.get("sampling", {}).items():
        if "images_per_s" in key:
            table.add_row(f"sampling {key.replace('_images_per_s', '')} images/s", f"{value:.2f}")
    Console(width=120).print(table)


def check_model_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--model must name a model config preset and each --set a KEY=VALUE of its options: say so before any work."""
    preset = CONFIG_DIR / "model" / f"{args.model}.yaml"
    if not preset.is_file():
        names = ", ".join(sorted(f.stem for f in preset.parent.glob("*.yaml")))
        p.error(f"--model {args.model}: no such model preset (presets: {names})")
    options = set(OmegaConf.load(preset)) - {"_target_"}
    for item in args.set:
        key = item.split("=", 1)[0]
        if "=" not in item or key not in options:
            p.error(
                f"--set {item}: use KEY=VALUE with KEY an option of the {args.model} preset: "
                + ", ".join(sorted(options))
            )


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check_model_args(p, args)
    result = run(args)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
