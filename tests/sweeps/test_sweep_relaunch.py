"""A sweep launched again over its sweep dir (README "Time limits, pre-emption and restarts"): completed jobs are
not trained again, a job that was killed resumes from its last checkpoint, the rest start; a changed arm is
refused before anything in its dir is touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_train_cli
from tests.sweeps.test_readme_sweeps import TOY_SIZES


@pytest.mark.slow
def test_a_sweep_launched_again_skips_completed_jobs_and_resumes_the_killed_one(tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        "-m",
        "experiment=toy_moons",
        "schedule=linear,cosine,sigmoid",
        f"hydra.sweep.dir={sweep}",
        f"paths.root_dir={tmp_path}",
        *TOY_SIZES,
        "trainer.log_every_n_steps=1",
        "logger=csv",
        "callbacks.model_checkpoint.every_n_train_steps=10",
        # the sweep's process dies at step 20 of job 1 (after that step's checkpoint), on the first launch only
        "+callbacks.kill._target_=tests.robustness.helpers.KillOnceAtStep",
        "+callbacks.kill.step=20",
        "+callbacks.kill.job=1",
    ]
    first = run_train_cli(command, cwd=tmp_path, check=False)
    assert first.returncode == -9, first.stderr[-3000:]
    done = json.loads((sweep / "0" / "metrics.json").read_text())
    history = (sweep / "0" / "metrics.jsonl").read_bytes()
    assert done["status"] == "completed" and json.loads((sweep / "1" / "metrics.json").read_text())["status"] == (
        "running"
    )
    assert not (sweep / "2").exists()
    last = torch.load(sweep / "1" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert 10 <= last <= 20

    again = run_train_cli(command, cwd=tmp_path)  # the same command
    assert "already completed; not trained again" in again.stderr
    assert json.loads((sweep / "0" / "metrics.json").read_text()) == done, "job 0 untouched: same record"
    assert (sweep / "0" / "metrics.jsonl").read_bytes() == history
    resumed = json.loads((sweep / "1" / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["global_step"] == 30 and resumed["restarts"] == 1
    (entry,) = resumed["restart_log"]
    assert entry["resumed_from_step"] == last and "died without a word" in entry["reason"]
    steps = [row["step"] for row in map(json.loads, (sweep / "1" / "metrics.jsonl").open()) if "train/loss" in row]
    assert steps == list(range(30)), "every step once"
    fresh = json.loads((sweep / "2" / "metrics.json").read_text())
    assert fresh["status"] == "completed" and "restarts" not in fresh

    changed = [o.replace("linear,cosine,sigmoid", "linear,quadratic,sigmoid") for o in command]
    refused = run_train_cli(changed, cwd=tmp_path, check=False)
    assert refused.returncode != 0
    assert "trained with another config: diffusion.schedule: 'cosine' -> 'quadratic'" in refused.stderr
    assert json.loads((sweep / "1" / "metrics.json").read_text()) == resumed, "the old run's record stands"


def test_a_changed_config_names_its_keys(tmp_path: Path):
    from omegaconf import OmegaConf

    from ddpm_lab.cli.errors import ConfigError
    from ddpm_lab.cli.restarts import earlier_attempt

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"status": "completed"}))
    (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml({"a": {"b": 1}, "ckpt_path": None, "seed": 0}))
    same = OmegaConf.to_yaml({"a": {"b": 1}, "ckpt_path": "last", "seed": 0})  # how it resumes is not the config
    assert earlier_attempt(run, same)["status"] == "completed"
    with pytest.raises(ConfigError, match=r"a\.b: 1 -> 2; seed: 0 -> 1"):
        earlier_attempt(run, OmegaConf.to_yaml({"a": {"b": 2}, "ckpt_path": None, "seed": 1}))
