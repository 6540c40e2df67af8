"""The learning-rate schedule: closed forms, and the rates a real run logs."""

import math

import pytest

from ddpm_lab.cli.train import train
from ddpm_lab.lightning.lr_schedule import lr_factor
from ddpm_lab.run_record import read_history
from tests.conftest import FAST_TRAINER, TINY_UNET, compose_config


def test_warm_up_then_constant_cosine_or_linear():
    assert [lr_factor(s, 4, 100) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(1000, 4, 100) == 1.0  # constant: DDPM
    assert lr_factor(4, 4, 104, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(54, 4, 104, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_factor(104, 4, 104, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(54, 4, 104, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(500, 4, 104, "linear", 0.2) == pytest.approx(0.2), "held at the floor after the end"


@pytest.mark.slow
def test_a_cosine_run_logs_the_cosine_rates(tmp_path):
    overrides = ["module.lr_warmup_steps=0", "module.lr_schedule=cosine", "module.lr_min_ratio=0.1"]
    cfg = compose_config("train", tmp_path, ["logger=csv", *FAST_TRAINER, *TINY_UNET, *overrides])
    train(cfg)
    logged = [row["lr-AdamW"] for row in read_history(tmp_path / "run") if "lr-AdamW" in row]
    base = cfg.optimizer.lr
    assert logged == pytest.approx([base * lr_factor(s, 0, 4, "cosine", 0.1) for s in range(4)])
