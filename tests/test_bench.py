"""The benchmark harness runs end to end on a tiny model and reports consistent figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ddpm_lab.bench import main as bench_main

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_ddpm_bench_reports_train_sampling_overhead_and_mfu(tmp_path):
    out = tmp_path / "bench.json"
    assert (
        bench_main(
            [
                "--model",
                "unet_tiny",
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
    lightning, bare = result["train_lightning"], result["train_bare_loop"]
    assert lightning["images_per_s"] == pytest.approx(4 / lightning["step_s"])
    assert result["lightning_overhead"] == pytest.approx(lightning["step_s"] / bare["step_s"] - 1)
    sampling = result["sampling"]
    assert sampling["ddim_2_images_per_s"] > 0 and sampling["ddpm_full_50_images_per_s_estimated"] > 0
    assert result["mfu"]["mfu"] > 0 and result["mfu"]["train_flops_per_step"] > 1e6


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
