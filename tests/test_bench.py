"""The benchmark harness runs end to end on a tiny model and reports consistent figures."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ddpm_lab.bench import main as bench_main
from ddpm_lab.cli import CONFIG_DIR

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_ddpm_bench_reports_train_sampling_overhead_and_mfu(tmp_path):
    out = tmp_path / "bench.json"
    assert (
        bench_main(
            [
                "--model",
                "unet_tiny",
                "--set",
                "base_channels=64",
                "--image-size",
                "8",
                "--channels",
                "1",
                "--batch-size",
                "4",
                "--warmup",
                "1",
                "--repeats",
                "3",
                "--sample-steps",
                "2",
                "--sample-batch",
                "2",
                "--sample-repeats",
                "1",
                "--timesteps",
                "50",
                "--device",
                "cpu",
                "--mfu",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    tiny = OmegaConf.load(CONFIG_DIR / "model" / "unet_tiny.yaml")
    wider = instantiate(tiny, sample_shape=[1, 8, 8], learned_variance=False, base_channels=64)
    assert result["parameters"] == sum(p.numel() for p in wider.parameters())  # --set reached the network
    lightning, bare = result["train_lightning"], result["train_bare_loop"]
    assert lightning["images_per_s"] == pytest.approx(4 / lightning["step_s"])
    assert result["lightning_overhead"] == pytest.approx(lightning["step_s"] / bare["step_s"] - 1)
    sampling = result["sampling"]
    assert sampling["ddim_2_images_per_s"] > 0 and sampling["ddpm_full_50_images_per_s_estimated"] > 0
    mfu = result["mfu"]
    assert mfu["matmul_dtype"] == "float32"  # the run's precision (32-true), not bf16
    assert mfu["mfu"] == pytest.approx(mfu["train_flops_per_step"] / lightning["step_s"] / mfu["matmul_flops_per_s"])
    assert mfu["train_flops_per_step"] > 1e6


@pytest.mark.slow
def test_compare_diffusers_runs_the_same_workload(tmp_path):
    pytest.importorskip("diffusers")
    out = tmp_path / "cmp.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "compare_diffusers.py"),
            "--image-size",
            "8",
            "--base",
            "32",
            "--mults",
            "1",
            "2",
            "--attention",
            "4",
            "--batch-size",
            "2",
            "--warmup",
            "1",
            "--repeats",
            "2",
            "--sample-steps",
            "2",
            "--sample-batch",
            "2",
            "--sample-repeats",
            "1",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    result = json.loads(out.read_text())
    assert result["parameter_ratio"] == pytest.approx(1.0, abs=0.05)
    assert result["train_speedup"] > 0 and result["sample_speedup"] > 0


def test_window_timer_times_whole_windows_after_the_warmup(monkeypatch):
    import ddpm_lab.bench as bench

    clock = iter(range(0, 1000, 1))  # each perf_counter call is one second later
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
    timer = bench.WindowTimer(warmup=2, window=3, device=torch.device("cpu"))
    reads = []
    for _ in range(2 + 2 * 3):
        timer.step_start()
        timer.step_end()
        reads.append(len(timer.times))
    # the clock is read only at the start and the end of each window: 1 s apart, over 3 steps
    assert reads == [0, 0, 0, 0, 1, 1, 1, 2] and timer.times == pytest.approx([1 / 3, 1 / 3])


def test_profile_groups_device_time_by_kernel_family():
    from ddpm_lab.profiling import profile_steps

    a, b = torch.randn(256, 256), torch.randn(256, 256)
    conv = torch.nn.Conv2d(4, 8, 3)
    x = torch.randn(2, 4, 16, 16)
    result = profile_steps(lambda: (a @ b, conv(x)), torch.device("cpu"), steps=3)
    families = result["ms_per_step_by_family"]
    assert families["convolution / matmul"] > 0
    assert list(families.values()) == sorted(families.values(), reverse=True)
    assert any("mm" in name or "conv" in name for name in result["top_kernels_ms_per_step"])


def test_gpu_suite_script_is_valid_bash_and_names_every_run():
    script = ROOT / "benchmarks" / "gpu_suite.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for run in ("bench_bf16_fast", "bench_fp32_eager", "compare_diffusers", "bench_bf16_cudagraphs"):
        assert f"run {run} " in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "base_channels"], r"--set base_channels: use KEY=VALUE with KEY an option of the unet_tiny preset"),
        (["--set", "width=64"], r"--set width=64: use KEY=VALUE .*base_channels, channel_mults"),
        (["--model", "unet_huge"], r"--model unet_huge: no such model preset \(presets: mlp, unet_celeba64"),
    ],
)
def test_ddpm_bench_refuses_a_bad_model_or_set_before_any_work(argv, message, capsys, monkeypatch):
    import ddpm_lab.bench as bench

    monkeypatch.setattr(bench, "run", lambda args: pytest.fail("benchmark started before the arguments were checked"))
    with pytest.raises(SystemExit) as exit_info:
        bench_main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def benchmark_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.slow
def test_learned_variance_and_speckle_benchmarks_run_small(tmp_path):
    """benchmarks/learned_variance_few_steps.py (the IDDPM few-step check): one arm, 2 training steps; and
    benchmarks/speckled_samples.py on the checkpoint it leaves."""
    script = benchmark_script("learned_variance_few_steps")
    result = script.measure("learned_range_hybrid", 0, 2, tmp_path, num_samples=8)
    assert set(result) == {"mmd2x1e3_10", "mmd2x1e3_25"} and all(np.isfinite(v) for v in result.values())
    same = torch.randn(300, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(script.mmd2(same[:150], same[150:])) < script.mmd2(same[:150] + 1.0, same[150:])

    speckle = benchmark_script("speckled_samples")
    counts = speckle.count_speckled(tmp_path / "run" / "checkpoints" / "last.ckpt", 4, speckle.SETTINGS[:1])
    assert set(counts) == {"ddim 10"} and all(0 <= n <= 4 for n in counts["ddim 10"])
    # the criterion on the quickstart's 16x16 digits: uniform noise is always speckled (TV ~1.3 against at most
    # ~0.5 for a real digit), and so are digits with salt-and-pepper on a fifth of their pixels
    from ddpm_lab.data import DigitsDataModule

    images = DigitsDataModule(image_size=16).images("train")
    digits = torch.stack([images[i] for i in range(len(images))]).float() / 127.5 - 1
    threshold = speckle.speckle_threshold(digits[:500])
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(64, 1, 16, 16, generator=generator) * 2 - 1
    salted = digits[500:564].clone()
    mask = torch.rand(salted.shape, generator=generator) < 0.2
    salted[mask] = torch.randint(0, 2, salted.shape, generator=generator)[mask].float() * 2 - 1
    assert (speckle.total_variation(noise) > threshold).all() and (speckle.total_variation(salted) > threshold).all()
    assert (speckle.total_variation(digits[500:]) > threshold).float().mean() < 0.01
