"""Where a training step's time goes: the torch profiler's device time per step, grouped by kernel family."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU, where every op is synchronous."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Device-kernel families by name, for the profile summary (first match wins).
KERNEL_FAMILIES = {
    "attention": ("flash", "fmha", "attention", "attn"),
    "convolution / matmul": ("conv", "gemm", "xmma", "cutlass", "cudnn", "wgrad", "dgrad", "fprop", "sm90", "sm80"),
    "optimizer / EMA / clipping": ("adam", "foreach", "multi_tensor", "lerp", "norm_kernel"),
    "fused by torch.compile (triton)": ("triton",),
}


def profile_steps(step_fn: Callable[[], None], device: torch.device, steps: int) -> dict[str, Any]:
    """Profile ``steps`` calls of ``step_fn``: device time per step by kernel family, and the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step_fn()
        synchronize(device)
    timing = (lambda e: e.device_time_total) if device.type == "cuda" else (lambda e: e.self_cpu_time_total)
    events = [e for e in prof.key_averages() if timing(e)]
    if device.type == "cuda":  # kernels only (the CPU-side ops' totals would count their kernels again)
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    families: dict[str, float] = {}
    for event in events:
        name = event.key.lower()
        family = next((f for f, keys in KERNEL_FAMILIES.items() if any(k in name for k in keys)), "other")
        families[family] = families.get(family, 0.0) + timing(event) / 1e3 / steps
    top = sorted(events, key=timing, reverse=True)[:15]
    return {
        "ms_per_step_by_family": dict(sorted(families.items(), key=lambda kv: -kv[1])),
        "top_kernels_ms_per_step": {e.key[:100]: timing(e) / 1e3 / steps for e in top},
    }
