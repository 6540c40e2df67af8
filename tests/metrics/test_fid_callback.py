"""FID and NLL during training, single process and DDP (2 CPU processes, gloo)."""

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict
from PIL import Image

from ddpm_lab.cli.evaluate import evaluate
from ddpm_lab.cli.train import train
from ddpm_lab.data import DigitsDataModule
from ddpm_lab.metrics import GaussianStats, InceptionFeatures, InceptionWeightsError, frechet_distance
from tests.conftest import FAST_TRAINER, TINY_UNET, compose_config, fid_overrides, run_train_cli

pytestmark = pytest.mark.slow


def saved_samples(run: Path) -> np.ndarray:
    files = sorted((run / "fid").glob("fid_samples_step_*.npz"))
    return np.load(files[-1])["images"]


def write_pngs(images: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"{i:03d}.png")  # grey (1, H, W) -> L-mode PNG
    return folder


def test_callback_fid_equals_torch_fidelity_on_the_same_images(tmp_path, inception_weights, monkeypatch):
    from torch_fidelity import calculate_metrics

    from tests.dinov2_hub import write_dinov2_hub

    monkeypatch.setenv("TORCH_HOME", str(write_dinov2_hub(tmp_path / "torch_home")))
    dinov2 = ["metrics.fid.fd_dinov2=true", "metrics.fid.dinov2_model=dinov2-vit-s-14"]
    cfg = compose_config(
        "train",
        tmp_path,
        [*FAST_TRAINER, *TINY_UNET, "logger=csv", *fid_overrides(inception_weights, tmp_path), *dinov2],
    )
    summary = train(cfg)
    assert {"val/fid", "val/kid_mean", "val/is", "val/nll_bpd"} <= set(summary["final"])
    protocol = summary["fid_protocol"]
    assert protocol["num_samples"] == 7 and protocol["reference"] == "digits:train"
    assert protocol["reference_num_images"] == 20 and protocol["weights"] == "ema" and protocol["sampler_steps"] == 3
    assert summary["val/fid_best"] == summary["best"]["val/fid"]["value"]
    assert summary["nll_protocol"]["num_images"] == 4 and summary["final"]["val/nll_bpd"] > 0

    samples = write_pngs(saved_samples(tmp_path / "run"), tmp_path / "samples")
    reference = DigitsDataModule().images("train")
    real = write_pngs(np.stack([reference[i].numpy() for i in range(20)]), tmp_path / "real")
    theirs = calculate_metrics(
        input1=str(samples),
        input2=str(real),
        cuda=False,
        fid=True,
        kid=True,
        kid_subset_size=7,  # ours caps the subset at the smaller set, as recorded in the protocol
        isc=True,
        isc_splits=7,
        prc=True,
        feature_extractor="inception-v3-compat",  # torch-fidelity's default for prc is VGG16
        feature_layer_prc="2048",
        verbose=False,
        feature_extractor_weights_path=str(inception_weights),
        cache=False,
    )
    final = summary["final"]
    assert final["val/fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert final["val/kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3, abs=1e-6)
    assert final["val/is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-3)
    assert (final["val/precision"], final["val/recall"]) == (theirs["precision"], theirs["recall"])
    assert final["val/fid_ci_low"] <= final["val/fid"] <= final["val/fid_ci_high"]
    assert summary["val/fid_best_ci95"] == [final["val/fid_ci_low"], final["val/fid_ci_high"]]
    assert protocol["num_evals"] == 1 and "100 replicates" in protocol["bootstrap"]
    theirs_dinov2 = calculate_metrics(
        input1=str(samples), input2=str(real), cuda=False, fid=True, feature_extractor="dinov2-vit-s-14",
        verbose=False, cache=False,
    )  # fmt: skip
    assert final["val/fd_dinov2"] == pytest.approx(theirs_dinov2["frechet_inception_distance"], rel=1e-3)
    assert "dinov2-vit-s-14" in protocol["fd_dinov2"]["feature_extractor"]

    # ddpm-eval on the same checkpoint: loss, FID/KID/IS with its protocol, NLL, and a leaderboard record.
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    eval_cfg = compose_config(
        "eval",
        tmp_path / "eval",
        [
            f"ckpt_path={ckpt}",
            f"metrics.inception_weights={inception_weights}",
            f"metrics.cache_dir={tmp_path / 'cache'}",
            "metrics.fid.num_samples=5",
            "metrics.fid.batch_size=5",
            "metrics.fid.steps=2",
            "metrics.fid.progress=false",
            "metrics.fid.reference_num_images=20",
            "metrics.nll.num_images=4",
            "metrics.nll.progress=false",
            "limit_batches=1",
            "device=cpu",
        ],
    )
    record = evaluate(eval_cfg)
    metrics = record["metrics"]
    assert {"val/loss", "val/fid", "val/kid_mean", "val/is", "val/nll_bpd"} <= set(metrics)
    assert record["fid_protocol"]["num_samples"] == 5 and record["fid_protocol"]["sampler_steps"] == 2
    eval_summary = json.loads((tmp_path / "eval" / "run" / "metrics.json").read_text())
    assert eval_summary["status"] == "completed" and eval_summary["choices"]["steps"] == 2
    assert eval_summary["final"]["val/fid"] == pytest.approx(metrics["val/fid"])
    assert eval_summary["arm"].startswith(summary["arm"]) and eval_summary["seed"] == "42:0"
    assert eval_summary["code"]["version"] == summary["code"]["version"] == record["code"]["version"]

    # num_evals=2: seeds 0 and 1; the first set is the one just measured, so the second follows from the mean.
    with open_dict(eval_cfg):
        eval_cfg.metrics.fid.num_evals = 2
        eval_cfg.paths.output_dir = str(tmp_path / "eval2")
    twice = evaluate(eval_cfg)["metrics"]
    first = metrics["val/fid"]
    second = 2 * twice["val/fid"] - first
    assert twice["val/fid_min"] == pytest.approx(min(first, second), rel=1e-5)  # logged as float32
    assert twice["val/fid_std"] == pytest.approx(abs(first - second) / 2**0.5, rel=1e-5)
    assert abs(second - first) > 1e-6, "another sampling seed gives another sample set"


def test_missing_weights_stop_at_start_up_and_skip_works(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr("torch.hub.download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    overrides = [
        *FAST_TRAINER,
        *TINY_UNET,
        "logger=csv",
        "metrics=default",
        "metrics.nll=null",
        "metrics.fid.on_missing_weights=error",
    ]
    with pytest.raises(InceptionWeightsError, match=r"metrics\.inception_weights=PATH"):
        train(compose_config("train", tmp_path, overrides))
    assert not (tmp_path / "run" / "checkpoints").exists(), "no training happened before the error"
    summary = train(
        compose_config("train", tmp_path / "skip", [*overrides[:-1], "metrics.fid.on_missing_weights=skip"])
    )
    assert summary["status"] == "completed" and "val/fid" not in summary["final"]


def test_ddp_multirun_gives_single_process_fid(tmp_path, inception_weights):
    """`ddpm-train -m` over two jobs, each DDP on 2 CPU processes: each job has one run dir and one W&B run,
    generates exactly num_samples distinct images, and its FID equals the single-process FID of those images."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "trainer=ddp_cpu",
        "schedule=linear,cosine",
        f"hydra.sweep.dir={sweep}",
        "logger=wandb",
        f"paths.root_dir={tmp_path}",
        *FAST_TRAINER,
        *TINY_UNET,
        *fid_overrides(inception_weights, tmp_path),
    ]
    run_train_cli(args, cwd=tmp_path, timeout=400)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"], "children must not start sweeps or run dirs of their own"
    assert not (tmp_path / "logs").exists() and not (tmp_path / "outputs").exists()
    extractor = InceptionFeatures(inception_weights)
    reference = DigitsDataModule().images("train")
    ref_pool, _ = extractor(np_to_tensor(np.stack([reference[i].numpy() for i in range(20)])))
    for job in jobs:
        summary = json.loads((job / "metrics.json").read_text())
        assert summary["status"] == "completed" and summary["world_size"] == 2 and summary["global_step"] == 4
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
        images = saved_samples(job)
        assert len(images) == 7 and len({im.tobytes() for im in images}) == 7, "7 distinct samples, no padding copies"
        pool, _ = extractor(np_to_tensor(images))
        single = frechet_distance(GaussianStats.from_features(pool), GaussianStats.from_features(ref_pool))
        assert summary["final"]["val/fid"] == pytest.approx(single, rel=1e-4)
        assert summary["fid_protocol"]["world_size"] == 2
    choices = [json.loads((job / "metrics.json").read_text())["choices"]["schedule"] for job in jobs]
    assert choices == ["linear", "cosine"]


def np_to_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(images)
