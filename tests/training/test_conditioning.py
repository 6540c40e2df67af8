"""Class-conditional training and classifier-free guidance end to end (conditioning=class)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from ddpm_lab.cli.builders import build_datamodule, module_from_checkpoint
from ddpm_lab.cli.sample import sample
from ddpm_lab.cli.train import train
from ddpm_lab.cli.validation import ConfigError, validate_config
from tests.conftest import FAST_TRAINER, TINY_UNET, compose_config, fid_overrides


@pytest.mark.slow
def test_a_conditional_digits_run_trains_samples_per_class_and_records_its_guidance(tmp_path, inception_weights):
    cfg = compose_config(
        "train",
        tmp_path,
        [
            "conditioning=class",
            "logger=csv",
            *FAST_TRAINER,
            *TINY_UNET,
            *fid_overrides(inception_weights, tmp_path),
            "sampling.guidance_scale=2.0",
            "callbacks.sample_images.num_samples=20",
        ],
    )
    summary = train(cfg)
    assert summary["status"] == "completed"
    protocol = json.loads((tmp_path / "run" / "metrics.json").read_text())["fid_protocol"]
    assert protocol["conditional"] is True and protocol["guidance_scale"] == 2.0
    module, _ = module_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert module.num_classes == 10 and module.ema.module.class_embed.num_embeddings == 11  # + the null class

    # The class changes the samples (same noise, different labels), and guidance changes them again.
    def draw(labels, scale):
        generator = torch.Generator().manual_seed(0)
        return module.generate(4, generator=generator, labels=labels, guidance_scale=scale, steps=3)

    zeros, nines = torch.zeros(4, dtype=torch.long), torch.full((4,), 9)
    assert not torch.allclose(draw(zeros, 1.0), draw(nines, 1.0))
    assert not torch.allclose(draw(zeros, 1.0), draw(zeros, 3.0))

    out = tmp_path / "sampled"
    sample_cfg = compose_config(
        "sample",
        tmp_path,
        [
            f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
            "num_samples=25",
            "batch_size=7",
            "sampling.steps=3",
            "sampling.guidance_scale=1.5",
            "progress=false",
        ],
    )
    with open_dict(sample_cfg):
        sample_cfg.paths.output_dir = str(out)
    record = sample(sample_cfg)
    saved = np.load(out / "samples.npz")
    # Labels 0..9 over the whole run (not restarting per batch of 7), stored as arr_1 like guided-diffusion.
    assert saved["arr_0"].shape[0] == 25 and saved["arr_1"].tolist() == [i % 10 for i in range(25)]
    assert record["guidance_scale"] == 1.5


def test_a_conditional_data_module_yields_labels(tmp_path, tiny_data_dir):
    for name in ("digits", "mnist", "cifar10"):
        cfg = compose_config(
            "train", tmp_path, [f"data={name}", "conditioning=class", f"paths.data_dir={tiny_data_dir}"]
        )
        datamodule = build_datamodule(cfg)
        datamodule.setup("fit")
        x, y = datamodule.train_set[0]
        assert x.ndim == 3 and y.dtype == torch.long and 0 <= int(y) < 10
        (images, labels), index = next(iter(datamodule.val_dataloader()))
        assert len(images) == len(labels) == len(index)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["experiment=toy_moons", "conditioning=class"], r"data=moons has no class labels.*conditioning=none"),
        (["data=celeba", "conditioning=class"], r"data=celeba has no class labels.*needs digits, mnist or cifar10"),
        (["sampling.guidance_scale=3"], r"guidance_scale=3 guides a class-conditional model.*conditioning=class"),
        (["conditioning=class", "module.p_uncond=1.0"], r"module.p_uncond=1.0 is not valid"),
        (["conditioning=class", "sampling.guidance_scale=-2"], r"sampling.guidance_scale=-2 is not valid"),
    ],
)
def test_bad_conditioning_is_refused_at_start_up(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config("train", tmp_path, overrides))
