"""The metric registry: every metric a run can log is in it, its direction agrees with an implementation we did
not write (torchmetrics' ``higher_is_better``) or with a closed form (a distance is 0 between a distribution and
itself), and every reader takes the direction from it: the run record's ``best``, the leaderboard's order and
its heading, Optuna's direction. Precision and recall were ranked lower-is-better before it."""

from __future__ import annotations

import json

import pytest
import torch
import torchmetrics
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from ddpm_lab.cli import CONFIG_DIR
from ddpm_lab.cli.leaderboard import main as leaderboard_main
from ddpm_lab.diffusion import GaussianDiffusion, make_beta_schedule
from ddpm_lab.diffusion.losses import LOSS_TYPES
from ddpm_lab.lightning import FIDCallback, NLLCallback, SampleDistanceCallback
from ddpm_lab.metric_registry import METRICS, direction, metric, optuna_direction
from ddpm_lab.metrics import GaussianStats, frechet_distance, mmd_squared
from ddpm_lab.run_record import summarize_history

# torchmetrics' class for the same quantity: its higher_is_better is the independent answer.
TORCHMETRICS = {
    "val/fid": torchmetrics.image.fid.FrechetInceptionDistance,
    "val/fd_dinov2": torchmetrics.image.fid.FrechetInceptionDistance,  # the same distance in other features
    "val/kid_mean": torchmetrics.image.kid.KernelInceptionDistance,
    "val/is": torchmetrics.image.inception.InceptionScore,
    "val/precision": torchmetrics.classification.BinaryPrecision,
    "val/recall": torchmetrics.classification.BinaryRecall,
    "val/mse": torchmetrics.MeanSquaredError,
    "val/l1": torchmetrics.MeanAbsoluteError,
    "train/mse": torchmetrics.MeanSquaredError,
    "train/l1": torchmetrics.MeanAbsoluteError,
}


def loss_terms(loss_type: str) -> set[str]:
    """The terms ``training_losses`` returns for ``loss_type`` (the module logs each as train/ and val/)."""
    var_type = "learned_range" if loss_type in ("kl", "hybrid") else "fixed_large"
    diffusion = GaussianDiffusion(make_beta_schedule("linear", 10), var_type=var_type, loss_type=loss_type)
    channels = 2 if diffusion.learned_variance else 1
    x0 = torch.zeros(2, 1, 4, 4)
    terms = diffusion.training_losses(lambda x, t: torch.zeros(2, channels, 4, 4), x0, torch.tensor([0, 5]))
    return set(terms)


def everything_a_run_logs() -> set[str]:
    """What the callbacks say they log with every option on, the loss terms of every loss type, and what
    Lightning's epoch counter, LearningRateMonitor and the NaN policy log."""
    fid = {"kid": True, "inception_score": True, "precision_recall": True, "bootstrap": 10, "fd_dinov2": True}
    names = {*FIDCallback.logged_metrics({**fid, "num_evals": 3}), *NLLCallback.logged_metrics({})}
    names |= set(SampleDistanceCallback.logged_metrics({}))
    names |= {f"{split}/{term}" for split in ("train", "val") for lt in LOSS_TYPES for term in loss_terms(lt)}
    return names | {"train/nonfinite_skipped", "epoch", "lr-AdamW"}


def test_every_metric_a_run_logs_is_registered():
    unknown = sorted(name for name in everything_a_run_logs() if metric(name) is None)
    assert not unknown, f"logged but not in metric_registry.METRICS: {unknown}"


@pytest.mark.parametrize("name", sorted(TORCHMETRICS))
def test_direction_agrees_with_torchmetrics(name):
    expected = "higher" if TORCHMETRICS[name].higher_is_better else "lower"
    assert direction(name) == expected


def test_distances_are_lower_is_better_by_closed_form():
    """MMD^2 and the Frechet distance are 0 between a distribution and itself and positive otherwise: lower is
    nearer the data (val/sample_distance is sqrt(max(MMD^2, 0)), val/nll_bpd a code length)."""
    g = torch.Generator().manual_seed(0)
    data, same, other = (torch.randn(400, 2, generator=g, dtype=torch.float64) + s for s in (0.0, 0.0, 2.0))
    assert abs(float(mmd_squared(same, data))) < float(mmd_squared(other, data))
    stats = GaussianStats.from_features(data)
    assert frechet_distance(stats, stats) < 1e-6 < frechet_distance(GaussianStats.from_features(other), stats)
    for name in ("val/sample_distance", "val/sample_mmd2", "val/fid", "val/fd_dinov2", "val/nll_bpd"):
        assert direction(name) == "lower"


def test_the_record_keeps_the_best_in_each_metrics_direction_and_none_without_one():
    rows = [
        {"step": 1, "val/precision": 0.2, "val/recall": 0.9, "val/fid": 30.0, "epoch": 0, "lr-AdamW": 1e-4},
        {"step": 2, "val/precision": 0.8, "val/recall": 0.4, "val/fid": 20.0, "epoch": 1, "lr-AdamW": 2e-4},
        {"step": 3, "val/precision": 0.5, "val/recall": 0.6, "val/fid": 25.0, "epoch": 2, "lr-AdamW": 1e-5},
    ]
    best = summarize_history(rows)["best"]
    assert best["val/precision"] == {"value": 0.8, "step": 2}
    assert best["val/recall"] == {"value": 0.9, "step": 1}
    assert best["val/fid"] == {"value": 20.0, "step": 2}
    assert "epoch" not in best and "lr-AdamW" not in best


def write_run(path, precision, seed):
    path.mkdir(parents=True)
    rows = [{"step": 10, "val/precision": precision}]
    summary = {"status": "completed", "arm": f"arm{precision}", "seed": seed, **summarize_history(rows)}
    summary["choices"] = {"schedule": f"s{precision}"}
    summary["fid_protocol"] = {"num_samples": 100}
    (path / "metrics.json").write_text(json.dumps(summary))


def test_leaderboard_ranks_precision_highest_first_and_refuses_a_metric_without_direction(tmp_path, capsys):
    for i, value in enumerate((0.3, 0.9, 0.6)):
        write_run(tmp_path / f"run{i}", value, 0)
    assert leaderboard_main([str(tmp_path), "--metric", "val/precision", "--out", str(tmp_path / "board")]) == 0
    markdown = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "(higher is better)" in markdown
    with open(tmp_path / "board" / "leaderboard.csv") as handle:
        ranked = [line.split(",") for line in handle.read().splitlines()[1:]]
    assert [row[1] for row in ranked][:3] == ["1", "2", "3"] and "s0.9" in ranked[0] and "s0.3" in ranked[2]
    capsys.readouterr()
    assert leaderboard_main([str(tmp_path), "--metric", "val/fid_std", "--out", str(tmp_path / "b2")]) == 2
    assert "--ascending or --descending" in capsys.readouterr().err


@pytest.mark.parametrize(("objective", "expected"), [("val/fid", "minimize"), ("val/is", "maximize")])
def test_optuna_direction_follows_the_objective(objective, expected):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=["+search=optuna", f"objective={objective}"], return_hydra_config=True)
    assert OmegaConf.select(cfg, "hydra.sweeper.direction") == expected == optuna_direction(objective)


def test_every_registered_metric_with_a_direction_says_lower_or_higher():
    assert all(m.direction in ("lower", "higher", None) for m in METRICS.values())
