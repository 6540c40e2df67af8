"""A user project's ``--config-dir`` beside the packaged configs: ranks > 0 of a torchrun/srun launch compose
with it as rank 0's Hydra did, and the example project's configs compose with ours (fast, in process; the
installed-wheel test in tests/packaging runs them as commands)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ddpm_lab.cli import CONFIG_DIR
from ddpm_lab.cli.command_line import command_line_overrides
from ddpm_lab.cli.config_dirs import shadowed_configs
from ddpm_lab.cli.launch_env import LaunchEnv, publish_rendezvous, rendezvous_path
from ddpm_lab.cli.train import rank_zero_config

EXAMPLE_CONF = Path(__file__).parents[1] / "examples" / "custom_project" / "conf"


def test_command_line_overrides_keep_the_config_dirs_in_every_spelling():
    args = [
        "--config-dir",
        "a",
        "-cd",
        "b",
        "--config-dir=c",
        "experiment=rings",
        "--cfg",
        "job",
        "trainer.max_steps=2",
    ]
    assert command_line_overrides(args) == (["experiment=rings", "trainer.max_steps=2"], ["a", "b", "c"])


def test_a_rank_above_zero_finds_rank_zeros_config_through_the_users_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_LAB_ROOT", str(tmp_path))
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text("published: true\n")
    publish_rendezvous(rendezvous_path(tmp_path / "logs", "job-7"), config=str(resolved))
    launch = LaunchEnv("torchrun", 1, 2, 2, 1, "job-7")
    cfg = rank_zero_config(launch, ["--config-dir", str(EXAMPLE_CONF), "experiment=rings"])
    assert cfg == OmegaConf.create({"published": True})


def test_the_example_projects_configs_compose_with_ours_and_name_none_of_ours():
    assert shadowed_configs(EXAMPLE_CONF) == []
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(
            config_name="train",
            overrides=[f"hydra.searchpath=[file://{EXAMPLE_CONF}]", "experiment=rings", "+ablation=ring_width"],
        )
    assert cfg.model._target_ == "rings_diffusion.RingDenoiser" and cfg.logger.wandb.project == "rings-diffusion"
    assert cfg.callbacks.sample_distance._target_ == "ddpm_lab.lightning.SampleDistanceCallback"
    assert shadowed_configs(CONFIG_DIR) != []  # the check itself: ours against ours names every file
