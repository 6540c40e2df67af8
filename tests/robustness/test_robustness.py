"""Long runs die: exact resume after SIGKILL, crash-safe saves, NaN policy, start-up validation, safe loading."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddpm_lab.cli.train import train
from ddpm_lab.cli.validation import ConfigError
from tests.conftest import FAST_TRAINER, TINY_UNET, PicklePayload, compose_config
from tests.conftest import run_train_cli as run_train

ROOT = Path(__file__).parents[2]
RESUME_RUN = [
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.deterministic=true",
    *TINY_UNET,
    "model.dropout=0.1",
    "data.batch_size=8",
    "trainer.val_check_interval=5",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "callbacks.model_checkpoint.every_n_train_steps=10",
    "callbacks.sample_images.every_n_steps=5",
    "callbacks.sample_images.num_samples=2",
    "sampling.steps=2",
    "metrics=none",
    "trainer.max_steps=20",
    "data.val_fraction=0.95",
]  # ~90 training images: several epochs in 20 steps


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_sigkill_and_resume_equals_a_straight_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_train([f"hydra.run.dir={straight}", f"paths.root_dir={tmp_path}", *RESUME_RUN], cwd=tmp_path)
    dead = run_train(
        [
            f"hydra.run.dir={killed}",
            f"paths.root_dir={tmp_path}",
            *RESUME_RUN,
            "+callbacks.kill._target_=tests.robustness.helpers.KillAtStep",
            "+callbacks.kill.step=10",
        ],
        cwd=tmp_path,
        check=False,
    )
    assert dead.returncode == -9, "the first attempt was SIGKILLed"
    assert load(killed / "checkpoints" / "last.ckpt")["global_step"] == 10
    # Started again in the same dir with ckpt_path=last, it picks up where it stopped.
    run_train([f"hydra.run.dir={killed}", f"paths.root_dir={tmp_path}", *RESUME_RUN, "ckpt_path=last"], cwd=tmp_path)
    a, b = load(straight / "checkpoints" / "last.ckpt"), load(killed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 20 and a["epoch"] == b["epoch"]
    for key, value in a["state_dict"].items():
        assert torch.allclose(value, b["state_dict"][key], atol=1e-6, rtol=0), key
    assert any(k.startswith("ema.") for k in a["state_dict"])
    state_a, state_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for index in state_a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.allclose(
                torch.as_tensor(state_a[index][name]), torch.as_tensor(state_b[index][name]), atol=1e-6, rtol=0
            )
    assert a["lr_schedulers"] == b["lr_schedulers"]
    steps = [
        int(line.split('"step": ')[1].split(",")[0])
        for line in (killed / "metrics.jsonl").read_text().splitlines()
        if '"train/loss"' in line
    ]
    assert steps == sorted(steps) and max(steps) == 19, "the metrics record continues across the restart"


def test_sigkill_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    script = f"""
import os, time, torch
from ddpm_lab.lightning.checkpointing import AtomicCheckpointIO
io = AtomicCheckpointIO()
io.save_checkpoint({{"global_step": 1, "w": torch.ones(3)}}, {str(target)!r})
real_save = torch.save
def slow_save(obj, handle, *args, **kwargs):
    handle.write(b"PK" + b"x" * 1000)  # half a file ...
    handle.flush()
    print("writing", flush=True)
    time.sleep(60)                      # ... and the kill arrives mid-save
torch.save = slow_save
io.save_checkpoint({{"global_step": 2, "w": torch.zeros(3)}}, {str(target)!r})
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.kill()
    child.wait()
    state = load(target)
    assert state["global_step"] == 1 and torch.equal(state["w"], torch.ones(3))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    from ddpm_lab.cli.builders import module_from_checkpoint

    marker = tmp_path / "pwned"

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "ddpm_lab": {"config": "x: 1"}, "payload": PicklePayload(marker)}, evil)
    with pytest.raises(ValueError, match=r"(?s)refusing to load .*evil\.ckpt.*weights_only=True"):
        module_from_checkpoint(evil)
    result = run_train(
        [
            f"hydra.run.dir={tmp_path / 'run'}",
            f"paths.root_dir={tmp_path}",
            *FAST_TRAINER,
            *TINY_UNET,
            f"ckpt_path={evil}",
        ],
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0 and "refusing to load" in result.stderr
    assert not marker.exists(), "the pickled payload must never execute"


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_nan_in_a_batch_triggers_the_policy(tmp_path, policy):
    overrides = [
        *FAST_TRAINER,
        *TINY_UNET,
        "logger=csv",
        "trainer.max_steps=6",
        f"module.nan_policy={policy}",
        "+callbacks.poison._target_=tests.robustness.helpers.PoisonBatch",
        "+callbacks.poison.batches=[2]",
    ]
    cfg = compose_config("train", tmp_path, overrides)
    if policy == "stop":
        with pytest.raises(FloatingPointError, match=r"non-finite loss at training step 2 \(mse=nan, loss=nan\)"):
            train(cfg)
        assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 2, "saved before the NaN"
    else:
        summary = train(cfg)
        assert summary["status"] == "completed" and summary["final"]["train/nonfinite_skipped"] == 1
        weights = load(tmp_path / "run" / "checkpoints" / "last.ckpt")["state_dict"]
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_skip_policy_gives_up_after_k_in_a_row(tmp_path):
    overrides = [
        *FAST_TRAINER,
        *TINY_UNET,
        "logger=csv",
        "trainer.max_steps=8",
        "module.nan_policy=skip",
        "module.max_consecutive_nonfinite=2",
        "+callbacks.poison._target_=tests.robustness.helpers.PoisonBatch",
        "+callbacks.poison.batches=[1,2,3]",
    ]
    with pytest.raises(FloatingPointError, match="3 non-finite losses in a row"):
        train(compose_config("train", tmp_path, overrides))


BAD_CONFIGS = [
    pytest.param(
        ["trainer=gpu"],
        r"asks for a GPU, but this machine has none .* trainer.accelerator=cpu trainer.precision=32-true",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
    ),
    (["data=image_folder", "data.path=/nonexistent/images"], r"image folder /nonexistent/images does not exist"),
    (["+foo=bar"], r"\+foo adds a key that nothing reads, so it would be silently ignored"),
    (["+sampling.step=50"], r"\+sampling.step adds a key that nothing reads.*Did you mean sampling.steps\?"),
    (["+model.foo=1"], r"UNet.__init__\(\) got an unexpected keyword argument 'foo'"),
    (["diffusion.schedule=cosin"], r"diffusion.schedule='cosin' is not valid; allowed values: constant, cosine"),
    (["diffusion.var_type=huge"], r"diffusion.var_type='huge' is not valid; allowed values: fixed_small"),
    (["diffusion.loss_type=huber"], r"diffusion.loss_type='huber' is not valid; allowed values: mse, l1, kl, hybrid"),
    (["diffusion.mean_type=score"], r"diffusion.mean_type='score' is not valid; allowed values: eps, x0, v"),
    (["diffusion.num_timesteps=1"], r"num_timesteps=1 is not valid: it must be an integer >= 2"),
    (["variance=learned_range", "loss=mse"], r"var_type='learned_range' learns the reverse variance.*loss=hybrid"),
    (["variance=fixed_large", "loss=hybrid"], r"hybrid' with var_type='fixed_large' trains exactly like loss=mse"),
    (["data.image_size=18"], r"cannot be built for data of shape \(1, 18, 18\): image size 18 is not divisible by 4"),
    (["model.attention_resolutions=[5]"], r"attention_resolutions \[5\] are not feature-map sizes.*\[16, 8, 4\]"),
    (
        ["metrics=default", "metrics.fid.on_missing_weights=skip", "metrics.fid.num_samples=1"],
        r"metrics.fid.num_samples=1 is not valid",
    ),
    (["model=mlp"], r"model=mlp is for 2-D point data"),
    (["module.channels_last=yes"], r"module.channels_last='yes' is not valid; allowed values: true, false, auto"),
    (["module.compile_mode=fastest"], r"module.compile_mode='fastest' is not valid; allowed values: default, reduce"),
    (
        ["module.fused_optimizer=true", "optimizer._target_=torch.optim.RMSprop", "~optimizer.betas"],
        r"optimizer torch.optim.RMSprop has no fused implementation.*module.fused_optimizer=auto",
    ),
    (
        ["module.fused_optimizer=true", "trainer.precision=16-mixed", "trainer.gradient_clip_val=1.0"],
        r"fused_optimizer=true cannot be combined with trainer.precision=16-mixed and trainer.gradient_clip_val=1.0",
    ),
    (["experiment=toy_moons", "model=unet_tiny"], r"model=UNet is for images"),
    (
        ["optimizer.lr=-1e-3"],
        r"the optimizer refuses its settings: Invalid learning rate: -0.001 \(optimizer.lr=-0.001",
    ),
    (["trainer.max_steps=abc"], r"trainer.max_steps='abc' is not valid: use a positive number of optimizer steps"),
    (["trainer.max_steps=0"], r"trainer.max_steps=0 is not valid"),
    (["module.lr_warmup_steps=-5"], r"module.lr_warmup_steps=-5 is not valid: use an integer >= 0"),
    (["module.lr_schedule=step"], r"module.lr_schedule='step' is not valid; allowed values: constant, cosine, linear"),
    (["module.lr_min_ratio=2"], r"module.lr_min_ratio=2 is not valid: use a fraction of the base rate in \[0, 1\]"),
    (["module.nan_policy=ignore"], r"module.nan_policy='ignore' is not valid; allowed values: stop, skip"),
    (["module.timestep_sampler=importance"], r"module.timestep_sampler='importance'.*uniform, loss_aware"),
    (["callbacks.posthoc_ema.snapshot_every=0"], r"callbacks.posthoc_ema: .*snapshot_every=0 is not valid"),
    (["callbacks.posthoc_ema.sigma_rels=[0.5]"], r"sigma_rel=0.5 is not valid"),
    (
        ["metrics=default", "metrics.fid.on_missing_weights=skip", "metrics.fid.num_evals=0"],
        r"metrics.fid.num_evals=0 is not valid: use an integer >= 1",
    ),
    (
        ["metrics=default", "metrics.fid.on_missing_weights=skip", "metrics.fid.bootstrap=5"],
        r"metrics.fid.bootstrap=5: use 0 \(no interval\) or at least 10 replicates",
    ),
    (
        ["model.base_channels=16"],
        r"the network cannot be built for data of shape \(1, 16, 16\): num_channels \(48\) must be divisible by",
    ),
    (["sampling.spacing=leading"], r"sampling.spacing='leading' is not valid; allowed values: uniform, trailing"),
    (["sampling.sampler=rk4"], r"sampling.sampler='rk4' is not valid; allowed values: ddpm, ddim, euler.*sampler=NAME"),
    (["sampling.eta=-1"], r"sampling.eta=-1 is not valid: use a number >= 0"),
    (["diffusion.loss_weighting=snr"], r"diffusion.loss_weighting='snr' is not valid.*loss_weighting=NAME"),
    (["loss_weighting=min_snr", "loss=kl"], r"loss=kl has none.*loss_weighting=min_snr"),
    (["diffusion.zero_terminal_snr=true"], r"zero terminal SNR.*parameterization=v.*parameterization=eps"),
    (["experiment=toy_moons", "diffusion.offset_noise=0.1"], r"offset_noise=0.1 shifts whole image channels.*points"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_CONFIGS)
def test_bad_config_fails_fast_with_its_message(tmp_path, overrides, message, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("data was loaded before the config was validated")

    # Start-up builds the DataModule (its constructor reads no data); loading data is what must not happen.
    for method in ("prepare_data", "setup"):
        monkeypatch.setattr(f"ddpm_lab.data.ImageDataModule.{method}", must_not_run)
    monkeypatch.setattr("ddpm_lab.data.PointsDataModule.points", must_not_run)
    cfg = compose_config("train", tmp_path, ["logger=csv", "metrics=none", *overrides])
    with pytest.raises(ConfigError, match=message):  # before any data is loaded (must_not_run), not by a clock
        train(cfg)
    assert "ConfigError" in (tmp_path / "run" / "metrics.json").read_text()


def test_more_cpu_processes_than_cores_is_warned_about(tmp_path, monkeypatch):
    from ddpm_lab.cli.launch_validation import validate_hardware

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    cfg = compose_config("train", tmp_path, ["trainer=ddp_cpu", "trainer.devices=3"])
    with pytest.warns(UserWarning, match=r"trainer.devices=3 CPU processes on 2 core\(s\)"):
        validate_hardware(cfg)


def test_a_network_far_larger_than_its_images_is_warned_about_and_the_presets_are_not(tmp_path):
    import warnings

    from ddpm_lab.cli.validation import validate_config

    cfg = compose_config("train", tmp_path, ["model=unet_cifar10", "metrics=none"])  # on the quickstart's digits
    with pytest.warns(UserWarning, match=r"model=UNet has 34.8M parameters for images of 256 values \(1x16x16\)"):
        validate_config(cfg)
    for experiment in ("quickstart", "mnist", "cifar10_ddpm", "celeba64"):
        cfg = compose_config("train", tmp_path, [f"experiment={experiment}", "metrics=none"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            validate_config(cfg)
        assert not [w for w in caught if "parameters for images" in str(w.message)], experiment


def test_a_file_that_is_not_a_checkpoint_is_named_as_such(tmp_path):
    from ddpm_lab.cli.checkpoint_validation import checkpoint_run_config

    image = tmp_path / "picture.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(ConfigError, match=r"picture.png is not a checkpoint \(a PNG image\)"):
        checkpoint_run_config(image)


@pytest.mark.slow
def test_a_config_error_is_one_message_not_a_traceback(tmp_path):
    """From the command line a start-up error is the one-paragraph message, exit status 1; the traceback is
    behind HYDRA_FULL_ERROR=1, as Hydra does for its own errors. It used to arrive inside a 45-line traceback."""
    args = [f"hydra.run.dir={tmp_path / 'run'}", "logger=csv", "metrics=none", "optimizer.lr=-1"]
    result = run_train(args, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("ddpm-train: the optimizer refuses its settings")
    assert "Traceback" not in result.stderr
    full = subprocess.run(
        [sys.executable, "-m", "ddpm_lab.cli.train", *args],
        cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 1 and "Traceback" in full.stderr and "ConfigError" in full.stderr


def test_wandb_api_key_never_reaches_the_run_dir(tmp_path, monkeypatch):
    secret = "wandb-secret-0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    cfg = compose_config("train", tmp_path, [*FAST_TRAINER, *TINY_UNET, "logger=wandb"])
    train(cfg)
    leaked = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked, leaked


@pytest.mark.slow
def test_rank_zero_failure_under_ddp_keeps_its_error(tmp_path):
    """The launcher's watchdog must not mistake the workers it stops for a crash and swallow rank 0's error."""
    run = tmp_path / "run"
    result = run_train(
        [
            f"hydra.run.dir={run}",
            f"paths.root_dir={tmp_path}",
            "trainer=ddp_cpu",
            *FAST_TRAINER,
            *TINY_UNET,
            "logger=csv",
            "+callbacks.boom._target_=tests.robustness.helpers.FailOnRankZero",
            "+callbacks.boom.step=2",
        ],
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert "injected failure on rank 0 at step 2" in result.stderr
    assert "DDP rank 1 exited" not in result.stderr
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "failed" and "injected failure" in summary["error"]


@pytest.mark.slow
def test_ddp_ranks_draw_their_own_timesteps_noise_and_dropout(tmp_path):
    """Every rank was seeded alike, so both ranks drew the same t, eps and dropout masks each step."""
    record = tmp_path / "rng"
    run_train(
        [
            f"hydra.run.dir={tmp_path / 'run'}",
            f"paths.root_dir={tmp_path}",
            "trainer=ddp_cpu",
            *FAST_TRAINER,
            *TINY_UNET,
            "logger=csv",
            "+callbacks.rng._target_=tests.robustness.helpers.RecordRandomState",
            f"+callbacks.rng.dir={record}",
        ],
        cwd=tmp_path,
    )
    rank0, rank1 = (json.loads((record / f"rng_rank{r}.json").read_text()) for r in (0, 1))
    assert rank0.keys() == rank1.keys() and len(rank0) == 4
    assert all(rank0[step] != rank1[step] for step in rank0), "ranks share their random stream"


@pytest.mark.slow
def test_ddp_sigkill_and_resume_equals_a_straight_ddp_run(tmp_path):
    """Each rank's RNG state is saved and restored (rank 0's was restored on every rank). 2 ranks: 5 batches per
    epoch, so the checkpoint at step 10 closes epoch 1 and follows the validation at step 10: a resume there
    skipped the whole next epoch (the sampler's skip outlived its epoch) and diverged (3e-4 in the weights)."""
    ddp = [*RESUME_RUN, "trainer=ddp_cpu", "callbacks.model_checkpoint.every_n_train_steps=10", "trainer.max_steps=20"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_train([f"hydra.run.dir={straight}", f"paths.root_dir={tmp_path}", *ddp], cwd=tmp_path)
    kill = ["+callbacks.kill._target_=tests.robustness.helpers.KillAtStep", "+callbacks.kill.step=10"]
    dead = run_train([f"hydra.run.dir={killed}", f"paths.root_dir={tmp_path}", *ddp, *kill], cwd=tmp_path, check=False)
    assert dead.returncode == -9
    saved = load(killed / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 10 and len(saved["ddpm_lab"]["rng_per_rank"]) == 2
    run_train([f"hydra.run.dir={killed}", f"paths.root_dir={tmp_path}", *ddp, "ckpt_path=last"], cwd=tmp_path)
    a, b = load(straight / "checkpoints" / "last.ckpt"), load(killed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 20 and a["epoch"] == b["epoch"]
    for key, value in a["state_dict"].items():
        assert torch.allclose(value, b["state_dict"][key], atol=1e-6, rtol=0), key
    for state_a, state_b in zip(a["ddpm_lab"]["rng_per_rank"], b["ddpm_lab"]["rng_per_rank"], strict=True):
        assert torch.equal(state_a["torch"], state_b["torch"])


@pytest.mark.slow
def test_ddp_validation_is_sharded_and_equals_the_single_process_loss(tmp_path):
    """Validation ran unsharded (every rank the same batches). Now each item is evaluated once across the ranks,
    with noise from its index, and the mean is reduced exactly: with frozen weights (lr 0) the DDP val/loss
    equals the one-process value on the same 8 items."""
    frozen = [*FAST_TRAINER, *TINY_UNET, "logger=csv", "optimizer.lr=0.0", "data.batch_size=8"]
    losses = {}
    for trainer in ("cpu", "ddp_cpu"):
        run, record = tmp_path / trainer, tmp_path / f"items_{trainer}"
        record_items = ["+callbacks.items._target_=tests.robustness.helpers.RecordValidationItems"]
        args = [f"hydra.run.dir={run}", f"paths.root_dir={tmp_path}", f"trainer={trainer}", *frozen, *record_items]
        run_train([*args, f"+callbacks.items.dir={record}"], cwd=tmp_path)
        summary = json.loads((run / "metrics.json").read_text())
        assert summary["world_size"] == (2 if trainer == "ddp_cpu" else 1)
        losses[trainer] = summary["final"]["val/loss"]
    ranks = [json.loads((tmp_path / "items_ddp_cpu" / f"val_rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(8)), "each of the 8 items once, across the two ranks"
    assert losses["ddp_cpu"] == pytest.approx(losses["cpu"], rel=1e-6, abs=1e-7)


def test_eval_shards_cover_every_item_once(monkeypatch):
    from ddpm_lab.data import resumable

    seen = []
    for rank in range(3):
        monkeypatch.setattr(resumable, "_world", lambda rank=rank: (3, rank))
        seen += list(resumable.EvalShardSampler(10))
    assert sorted(seen) == list(range(10))


TOY_RESUME = [
    "experiment=toy_swissroll",
    "logger=csv",
    "seed=7",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.deterministic=true",
    "data.num_train=256",
    "data.num_val=64",
    "data.num_test=64",
    "data.batch_size=64",  # 4 batches per epoch
    "model.hidden_dim=32",
    "trainer.max_steps=12",
    "trainer.val_check_interval=4",
    "callbacks.model_checkpoint.every_n_train_steps=4",
    "callbacks.sample_distance.num_samples=64",
    "callbacks.sample_images.every_n_steps=12",
    "callbacks.sample_images.num_samples=32",
]


@pytest.mark.slow
@pytest.mark.parametrize("process", ["ddpm", "edm"])
def test_toy_sigkill_at_an_epoch_end_after_a_validation_resumes_exactly(tmp_path, process):
    """Issue 17's toy case, small: the checkpoint at step 8 closes epoch 1 and follows a validation (whose
    loader once drew from the global RNG). The resumed run equals the straight one: weights to 1e-6, and the
    same train/loss and val/sample_distance at every logged step; so does EDM's (its log-normal sigmas are drawn
    from the restored random stream)."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    toy = [*TOY_RESUME, f"process={process}"]
    run_train([f"hydra.run.dir={straight}", f"paths.root_dir={tmp_path}", *toy], cwd=tmp_path)
    kill = ["+callbacks.kill._target_=tests.robustness.helpers.KillAtStep", "+callbacks.kill.step=8"]
    dead = run_train([f"hydra.run.dir={killed}", f"paths.root_dir={tmp_path}", *toy, *kill], cwd=tmp_path, check=False)
    assert dead.returncode == -9 and load(killed / "checkpoints" / "last.ckpt")["global_step"] == 8
    run_train([f"hydra.run.dir={killed}", f"paths.root_dir={tmp_path}", *toy, "ckpt_path=last"], cwd=tmp_path)
    a, b = load(straight / "checkpoints" / "last.ckpt"), load(killed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 12 and a["epoch"] == b["epoch"]
    for key, value in a["state_dict"].items():
        assert torch.allclose(value, b["state_dict"][key], atol=1e-6, rtol=0), key

    def logged(run, key):
        return [(r["step"], r[key]) for r in map(json.loads, (run / "metrics.jsonl").open()) if key in r]

    for key in ("train/loss", "val/sample_distance"):
        assert logged(killed, key) == pytest.approx(logged(straight, key), abs=1e-6), key
