"""End-to-end training through the real entry point (composed Hydra config, Lightning Trainer, callbacks)."""

import importlib.metadata
import json
import subprocess
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
from omegaconf import open_dict

from ddpm_lab.cli import CONFIG_DIR
from ddpm_lab.cli.builders import load_checkpoint, module_from_checkpoint
from ddpm_lab.cli.sample import sample
from ddpm_lab.cli.train import train
from ddpm_lab.cli.validation import ConfigError
from ddpm_lab.diffusion import SAMPLERS
from tests.conftest import FAST_TRAINER, TINY_UNET, compose_config

REPO = Path(__file__).parents[2]
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
TOY = {"toy2d", "toy_swissroll", "toy_moons", "toy_scurve"}


def experiment_overrides(name: str) -> list[str]:
    if name in TOY:
        return [
            "data.num_train=512",
            "data.num_val=64",
            "data.num_test=64",
            "model.hidden_dim=32",
            "callbacks.sample_distance.num_samples=64",
            "data.batch_size=32",
        ]
    return [*TINY_UNET, "data.batch_size=4", "data.num_workers=0"]


def run_dir_files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def test_experiment_list_is_complete():
    assert {"quickstart", "mnist", "cifar10_ddpm", "cifar10_iddpm", "celeba64"} | TOY <= set(EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_a_few_steps(experiment, tmp_path, tiny_data_dir):
    cfg = compose_config(
        "train",
        tmp_path,
        [
            f"experiment={experiment}",
            "logger=csv",
            "trainer=cpu",
            f"paths.data_dir={tiny_data_dir}",
            *FAST_TRAINER,
            *experiment_overrides(experiment),
        ],
    )
    summary = train(cfg)
    run = tmp_path / "run"
    assert summary["status"] == "completed" and summary["global_step"] == 4
    assert np.isfinite(summary["final"]["train/loss"])
    files = run_dir_files(run)
    assert {
        "checkpoints/last.ckpt",
        "samples/last.png",
        "metrics.jsonl",
        "metrics.json",
        "config_resolved.yaml",
    } <= files
    if experiment in TOY:
        assert "val/sample_distance" in summary["final"]
    else:
        assert "samples/trajectory_last.png" in files


def test_cifar10_ddpm_experiment_is_the_papers_setup(tmp_path):
    cfg = compose_config("train", tmp_path, ["experiment=cifar10_ddpm"])
    d = cfg.diffusion
    assert (d.num_timesteps, d.schedule, d.mean_type, d.var_type, d.loss_type) == (
        1000,
        "linear",
        "eps",
        "fixed_large",
        "mse",
    )
    assert cfg.data.batch_size == 128 and cfg.optimizer.lr == 2e-4 and cfg.module.ema_decay == 0.9999
    assert cfg.model.dropout == 0.1 and cfg.module.lr_warmup_steps == 5000 and cfg.trainer.gradient_clip_val == 1.0
    iddpm = compose_config("train", tmp_path, ["experiment=cifar10_iddpm"]).diffusion
    assert (iddpm.schedule, iddpm.var_type, iddpm.loss_type) == ("cosine", "learned_range", "hybrid")


def test_group_choices_reach_the_diffusion(tmp_path):
    cfg = compose_config(
        "train",
        tmp_path,
        [
            "~experiment",
            "schedule=cosine",
            "variance=learned_range",
            "loss=hybrid",
            "parameterization=v",
            "sampler=ddpm",
            "diffusion.num_timesteps=50",
        ],
    )
    from ddpm_lab.cli.builders import build_module

    module = build_module(cfg, (1, 16, 16))
    diff = module.diffusion
    assert (diff.mean_type, diff.var_type, diff.loss_type, diff.num_timesteps) == ("v", "learned_range", "hybrid", 50)
    assert module.network.out_channels == 2
    assert module.sampling["sampler"] == "ddpm" and module.sampling["steps"] is None


@pytest.fixture
def trained_run(tmp_path):
    """A quickstart run of 4 steps (tiny U-Net) whose checkpoint the tests below reuse."""
    cfg = compose_config("train", tmp_path, ["logger=wandb", *FAST_TRAINER, *TINY_UNET])
    summary = train(cfg)
    return tmp_path / "run", summary


def test_quickstart_run_dir_contents(trained_run):
    run, summary = trained_run
    files = run_dir_files(run)
    assert {
        "checkpoints/last.ckpt",
        "samples/last.png",
        "samples/trajectory_last.png",
        "samples/step_0000004.png",
        "metrics.jsonl",
        "metrics.json",
    } <= files
    offline_runs = list((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb"))
    summary_file = json.loads((run / "metrics.json").read_text())
    assert summary_file["status"] == "completed" and summary_file["choices"]["data"] == "digits"
    assert "val/loss" in summary["final"] and summary["best"]["val/loss"]["step"] in (1, 3)
    assert "epoch" not in summary["best"] and not any(k.startswith("lr-") for k in summary["best"])
    # Which code made the numbers, against what git, pip's metadata and the libraries themselves say.
    code = summary_file["code"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    if head:  # a checkout: the recorded commit is HEAD or, if a commit landed while the tests ran, an ancestor
        ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", str(code["git_commit"]), head], cwd=REPO)
        assert ancestor.returncode == 0 and isinstance(code["git_dirty"], bool)
    assert code["ddpm_lab"] == importlib.metadata.version("ddpm-lab") and code["version"].startswith(code["ddpm_lab"])
    assert code["torch"] == torch.__version__ and code["lightning"] == lightning.__version__
    assert code["device"].startswith("cpu")


def test_checkpoint_holds_ema_and_rebuilds(trained_run):
    run, _ = trained_run
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 4
    assert any(k.startswith("ema.module.") for k in checkpoint["state_dict"])
    module, _ = module_from_checkpoint(run / "checkpoints" / "last.ckpt")
    ema_weight = checkpoint["state_dict"]["ema.module.conv_in.weight"]
    assert torch.equal(module.ema.module.conv_in.weight, ema_weight)
    assert not torch.equal(module.network.conv_in.weight, ema_weight), "EMA differs from the raw weights"


def test_sample_cli_writes_grid_and_npz(trained_run, tmp_path):
    run, _ = trained_run
    out = tmp_path / "sampled"
    cfg = compose_config(
        "sample",
        tmp_path,
        [
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "num_samples=5",
            "batch_size=2",
            "sampling.steps=4",
            "progress=false",
            "save_pngs=true",
        ],
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    record = sample(cfg)
    arr = np.load(out / "samples.npz")["arr_0"]
    assert arr.shape == (5, 16, 16, 1) and arr.dtype == np.uint8
    assert (out / "samples.png").exists() and len(list((out / "images").glob("*.png"))) == 5
    assert record["steps"] == 4 and record["sampler"] == "ddpm" and record["use_ema"] is True
    again = tmp_path / "again"
    with open_dict(cfg):
        cfg.paths.output_dir = str(again)
        cfg.batch_size = 3  # sample i comes from seed (seed, i): the batch size does not change the samples
    sample(cfg)
    assert np.array_equal(np.load(again / "samples.npz")["arr_0"], arr), "same seed, same samples"


def test_resume_continues_from_the_saved_step(trained_run, tmp_path):
    run, _ = trained_run
    cfg = compose_config(
        "train",
        tmp_path / "resumed",
        [
            "logger=csv",
            *FAST_TRAINER,
            *TINY_UNET,
            "trainer.max_steps=8",
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        ],
    )
    summary = train(cfg)
    assert summary["global_step"] == 8
    steps = [
        row["step"]
        for row in map(json.loads, (tmp_path / "resumed" / "run" / "metrics.jsonl").open())
        if "train/loss" in row
    ]
    assert min(steps) >= 4, "training picked up at the saved step"


def test_seeded_sampling_regression_number():
    """A fixed network and seed give fixed samples (guards the sampling loop against silent changes)."""
    from ddpm_lab.diffusion import build_gaussian_diffusion
    from ddpm_lab.models import MLPDenoiser

    torch.manual_seed(0)
    net = MLPDenoiser((2,), hidden_dim=16, num_layers=1)
    diffusion = build_gaussian_diffusion("cosine", 50)
    # x0 is clipped to [-1, 1] at every step (asked for: the core no longer clips by default), which keeps an
    # untrained network's samples well-conditioned; the golden numbers are those of the clipped loop.
    kwargs = {"steps": 10, "clip_denoised": True}
    ddim = diffusion.sample(net, (4, 2), sampler="ddim", generator=torch.Generator().manual_seed(0), **kwargs)
    ddpm = diffusion.sample(net, (4, 2), sampler="ddpm", generator=torch.Generator().manual_seed(0), **kwargs)
    assert ddim.sum().item() == pytest.approx(REGRESSION["ddim"], abs=1e-4)
    assert ddpm.sum().item() == pytest.approx(REGRESSION["ddpm"], abs=1e-4)


REGRESSION = {"ddim": 1.7088322639465332, "ddpm": 0.7922244071960449}


@pytest.mark.parametrize("experiment", ["quickstart", "cifar10_ddpm", "toy_moons"])
def test_debug_presets_win_over_any_experiment(tmp_path, experiment):
    cfg = compose_config("train", tmp_path, [f"experiment={experiment}", "debug=default"])
    assert (cfg.trainer.max_steps, cfg.trainer.accelerator, cfg.trainer.val_check_interval) == (20, "cpu", 10)
    assert cfg.metrics.fid is None and cfg.sampling.steps == 5 and "wandb" not in (cfg.get("logger") or {})
    overfit = compose_config("train", tmp_path, [f"experiment={experiment}", "debug=overfit"])
    assert overfit.trainer.max_steps == 200 and overfit.trainer.overfit_batches == 2


def test_sample_cli_takes_a_sampler_preset_and_checks_steps_against_the_checkpoint(trained_run, tmp_path):
    """`ddpm-sample sampler=dpmpp_2m` loads the preset (sampler, steps, spacing) into `sampling`; a step count
    above the checkpoint's T stops at start-up with the key and the bound."""
    run, _ = trained_run
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    cfg = compose_config(
        "sample", tmp_path, [ckpt, "sampler=dpmpp_2m", "sampling.steps=3", "num_samples=4", "progress=false"]
    )
    assert (cfg.sampling.sampler, cfg.sampling.spacing) == ("dpmpp_2m", "trailing")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "dpm")
    record = sample(cfg)
    assert (record["sampler"], record["steps"]) == ("dpmpp_2m", 3)
    assert np.load(tmp_path / "dpm" / "samples.npz")["arr_0"].shape[0] == 4
    bad = compose_config("sample", tmp_path, [ckpt, "sampling.steps=5000"])
    with pytest.raises(
        ConfigError, match=r"sampling.steps=5000 is not valid: use null \(all steps\) or an integer in \[1, "
    ):
        sample(bad)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_draws_from_a_trained_image_model(trained_run, sampler):
    """End to end on the quickstart checkpoint (digits, U-Net, clip_denoised): every sampler, 3 steps, two
    spacings; finite images of the data's shape, the same for the same seed."""
    run, _ = trained_run
    module, _ = module_from_checkpoint(run / "checkpoints" / "last.ckpt")
    for spacing in ("trailing", "karras"):
        draws = [
            module.generate(3, generator=torch.Generator().manual_seed(5), sampler=sampler, steps=3, spacing=spacing)
            for _ in range(2)
        ]
        assert draws[0].shape == (3, *module.sample_shape) and torch.isfinite(draws[0]).all()
        assert torch.equal(draws[0], draws[1])


def test_an_epoch_bounded_quickstart_still_measures_at_the_end(tmp_path):
    """The quickstart's FID/NLL were due at ``${trainer.max_steps}``, which is -1 for a run bounded by epochs
    (every_n_steps=-1: a start-up error). They are now due once, at the end of training, however it ends."""
    overrides = [o for o in FAST_TRAINER if not o.startswith(("trainer.max_steps", "metrics="))]
    cfg = compose_config(
        "train",
        tmp_path,
        [
            "logger=csv",
            *overrides,
            *TINY_UNET,
            "trainer.max_steps=-1",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=3",
            "metrics.nll.num_images=2",
            "metrics.fid.steps=3",
            "metrics.nll.progress=false",
            "diffusion.num_timesteps=20",
        ],
    )
    assert cfg.metrics.nll.every_n_steps is None
    summary = train(cfg)
    assert summary["global_step"] == 3 and "val/nll_bpd" in summary["final"]
