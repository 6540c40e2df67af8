"""Post-hoc EMA through the real entry points: snapshots while training (and across a resume), rebuilt by
ddpm-eval ema.posthoc_std, and refused at start-up where a run saved none."""

import pytest
import torch
from omegaconf import open_dict

from ddpm_lab.cli.builders import module_from_checkpoint
from ddpm_lab.cli.checkpoint_validation import validate_eval_config
from ddpm_lab.cli.evaluate import evaluate, load_posthoc_ema
from ddpm_lab.cli.train import train
from ddpm_lab.cli.validation import ConfigError
from tests.conftest import FAST_TRAINER, TINY_UNET, compose_config

pytestmark = pytest.mark.slow
POSTHOC = ["callbacks.posthoc_ema.snapshot_every=2", "logger=csv", *FAST_TRAINER, *TINY_UNET]


def snapshot(run, step):
    return torch.load(run / "posthoc_ema" / f"snapshot_{step:08d}.pt", weights_only=True)


def test_snapshots_survive_a_resume_and_ddpm_eval_rebuilds_them(tmp_path):
    straight = tmp_path / "straight"
    train(compose_config("train", straight, [*POSTHOC, "trainer.max_steps=6"]))
    resumed = tmp_path / "resumed"
    train(compose_config("train", resumed, POSTHOC))  # 4 steps, then 2 more from last.ckpt
    train(compose_config("train", resumed, [*POSTHOC, "trainer.max_steps=6", "ckpt_path=last"]))
    for step in (2, 4, 6):
        a, b = snapshot(straight / "run", step), snapshot(resumed / "run", step)
        assert a["gammas"] == b["gammas"] and len(a["states"]) == 2
        for sa, sb in zip(a["states"], b["states"], strict=True):
            for key in sa:
                assert torch.equal(sa[key], sb[key]), (step, key)  # the resumed EMAs went on exactly

    ckpt = straight / "run" / "checkpoints" / "last.ckpt"
    overrides = [f"ckpt_path={ckpt}", "metrics=none", "limit_batches=1", "device=cpu", "ema.posthoc_std=0.10"]
    cfg = compose_config("eval", tmp_path / "eval", overrides)
    record = evaluate(cfg)
    assert record["posthoc_ema"]["snapshots"] == 3 and record["posthoc_ema"]["profile_error"] < 1e-6
    module, _ = module_from_checkpoint(ckpt)
    load_posthoc_ema(cfg, module)
    stored = snapshot(straight / "run", 6)["states"][1]  # sigma_rel 0.10 is the second tracked profile
    for key, value in module.ema.module.state_dict().items():
        assert torch.allclose(value, stored[key], atol=1e-6), key
    tracked = compose_config("eval", tmp_path / "tracked", overrides[:-1])
    assert evaluate(tracked)["metrics"]["val/loss"] != record["metrics"]["val/loss"], "other weights, other loss"


def test_posthoc_std_without_snapshots_is_refused_at_start_up(tmp_path):
    train(compose_config("train", tmp_path, ["logger=csv", *FAST_TRAINER, *TINY_UNET]))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_config("eval", tmp_path / "eval", [f"ckpt_path={ckpt}", "metrics=none", "ema.posthoc_std=0.05"])
    with pytest.raises(ConfigError, match="snapshot_every"):
        evaluate(cfg)
    with open_dict(cfg):
        cfg.ema.posthoc_std = 0.9
    with pytest.raises(ConfigError, match="sigma_rel"):
        evaluate(cfg)


def test_a_checkpoint_between_snapshots_is_rebuilt_from_the_emas_it_tracked(tmp_path):
    """snapshot_every=4 and a checkpoint at step 3: no snapshot is at or before it, but the checkpoint holds the
    EMAs tracked at step 3, so a stored length is rebuilt exactly from them; a length the two stored ones cannot
    make (0.27, wider than both) is refused at start-up, naming the limit, before anything loads."""
    overrides = ["callbacks.posthoc_ema.snapshot_every=4", "logger=csv", *FAST_TRAINER, *TINY_UNET]
    train(compose_config("train", tmp_path, [*overrides, "callbacks.model_checkpoint.every_n_train_steps=3"]))
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000003.ckpt"
    cfg = compose_config("eval", tmp_path / "eval", [f"ckpt_path={ckpt}", "metrics=none", "ema.posthoc_std=0.10"])
    module, _ = module_from_checkpoint(ckpt)
    rebuilt = load_posthoc_ema(cfg, module)
    assert rebuilt["step"] == 3 and rebuilt["snapshots"] == 1 and rebuilt["profile_error"] < 1e-9
    tracked = torch.load(ckpt, weights_only=True)["callbacks"]["PostHocEMACallback"]
    assert tracked["updated_at"] == 3
    for key, value in module.ema.module.state_dict().items():
        assert torch.allclose(value, tracked["states"][1][key], atol=1e-6), key
    with open_dict(cfg):
        cfg.ema.posthoc_std = 0.27
    with pytest.raises(ConfigError, match=r"cannot be rebuilt .*over the limit 0.1"):
        validate_eval_config(cfg)
