"""Damaged checkpoints, full disks, stale temp files, resumes that roll back history or change the network,
and the start-up messages that replace raw tracebacks (issue: "no raw tracebacks")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from ddpm_lab.atomic_files import remove_stale_temp_files
from ddpm_lab.cli.builders import module_from_checkpoint
from ddpm_lab.cli.train import train
from ddpm_lab.cli.validation import ConfigError
from ddpm_lab.lightning import checkpointing
from ddpm_lab.lightning.checkpointing import AtomicCheckpointIO, CheckpointDamagedError, load_checkpoint
from ddpm_lab.run_record import read_history
from ddpm_lab.visualize import view_limits
from tests.conftest import FAST_TRAINER, TINY_UNET, compose_config


@pytest.fixture
def quick_run(tmp_path):
    """A 4-step quickstart run with a CSV logger (checkpoints at steps 2 and 4)."""
    cfg = compose_config("train", tmp_path, ["logger=csv", *FAST_TRAINER, *TINY_UNET])
    train(cfg)
    return tmp_path / "run"


def test_a_zeroed_block_or_a_cut_is_reported_as_damage(quick_run, tmp_path):
    """4 KiB zeroed mid-file used to load silently (EMA weights zeroed, samples written)."""
    last = quick_run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 4  # intact: loads, checksums agree
    data = bytearray(last.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)
    zeroed = tmp_path / "zeroed.ckpt"
    zeroed.write_bytes(bytes(data))
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(last.read_bytes()[: len(data) // 3])
    for damaged in (zeroed, cut):
        with pytest.raises(CheckpointDamagedError, match=r"is damaged .*earlier checkpoint") as caught:
            module_from_checkpoint(damaged)
        assert "weights_only=False" not in str(caught.value)


def test_a_full_disk_says_so_and_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpointing.torch, "save", full_disk)
    with pytest.raises(OSError, match=r"no space left on the device while writing checkpoint .* MiB free"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, target)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(target)["state_dict"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left


def test_stale_temp_files_of_killed_saves_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".last.ckpt.tmp-{dead.stdout.strip()}"
    live = tmp_path / f".step_0000010.ckpt.tmp-{os.getppid()}"  # a writer that is still running
    for path in (stale, live):
        path.write_bytes(b"partial")
    (tmp_path / "last.ckpt").write_bytes(b"kept")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "last.ckpt"])


def test_a_resume_drops_the_rolled_back_rows_from_the_history(quick_run, tmp_path):
    """Rows logged after the checkpoint's step (a killed run's last steps) were kept, so step 5 appeared twice
    and `best` could come from a discarded step."""
    history = quick_run / "metrics.jsonl"
    straight_rows = read_history(quick_run)
    with history.open("a") as handle:  # a run killed during step 6, after the checkpoint at step 4
        for step in (4, 5):  # the 5th and 6th batches log under steps 4 and 5 (0-based)
            handle.write(json.dumps({"step": step, "train/loss": 1e-9}) + "\n")
        handle.write(json.dumps({"step": 5, "val/loss": 1e-9}) + "\n")
    cfg = compose_config(
        "train", tmp_path, ["logger=csv", *FAST_TRAINER, *TINY_UNET, "ckpt_path=last", "trainer.max_steps=6"]
    )
    summary = train(cfg)
    rows = read_history(quick_run)
    assert rows[: len(straight_rows)] == straight_rows  # what the checkpoint stands on is kept as it was
    for key in ("train/loss", "val/loss"):
        steps = [row["step"] for row in rows if key in row]
        assert steps == sorted(set(steps)), (key, steps)  # each step once
    assert [row["step"] for row in rows if "train/loss" in row] == list(range(6))
    assert summary["best"]["train/loss"]["value"] > 1e-9  # the discarded rows' value is gone


def test_resuming_with_another_network_names_the_setting_that_changed(quick_run, tmp_path):
    overrides = [o for o in TINY_UNET if not o.startswith("model.base_channels")]
    cfg = compose_config(
        "train", tmp_path, ["logger=csv", *FAST_TRAINER, *overrides, "model.base_channels=64", "ckpt_path=last"]
    )
    with pytest.raises(ConfigError, match=r"does not fit this run's network.*model.base_channels: 32 -> 64"):
        train(cfg)


def test_an_unwritable_run_dir_stops_with_a_message(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = subprocess.run(
        [sys.executable, "-m", "ddpm_lab.cli.train", f"hydra.run.dir={blocker / 'run'}", "debug=default"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline"},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot write the output dir hydra.run.dir={blocker / 'run'}: {blocker} is a file" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_wandb_run_carries_the_whole_config(tmp_path):
    cfg = compose_config("train", tmp_path, ["logger=wandb", *FAST_TRAINER, *TINY_UNET])
    train(cfg)
    (record,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    payload = record.read_bytes()
    assert b'"num_timesteps"' in payload and b'"lr_warmup_steps"' in payload and b'"ema_decay"' in payload


def test_debug_preset_leaves_anomaly_detection_off(tmp_path):
    cfg = compose_config("train", tmp_path, ["debug=default"])
    assert cfg.trainer.detect_anomaly is False


def test_tensorboard_logger_without_tensorboard_says_what_to_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed here")
    from ddpm_lab.cli.validation import validate_config

    cfg = compose_config("train", tmp_path, ["logger=tensorboard"])
    with open_dict(cfg):
        cfg.metrics = {}
    with pytest.raises(ConfigError, match=r"pip install -e '.\[tensorboard\]'"):
        validate_config(cfg)


def test_point_pictures_keep_the_data_in_view_when_a_few_samples_diverge():
    data = np.random.default_rng(0).normal(size=(500, 2))
    samples = np.concatenate([np.random.default_rng(1).normal(size=(990, 2)), np.full((10, 2), 1500.0)])
    lo, hi = view_limits(data, samples)
    assert (lo < data.min(0)).all() and (hi > data.max(0)).all()
    assert (hi - lo).max() < 12  # not stretched to 1500
