"""FID/KID/IS: closed forms, equality with torch-fidelity on the same folders and weights, caching, offline."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_lab.cli.fid import main as fid_main
from ddpm_lab.metrics import (
    GaussianStats,
    InceptionFeatures,
    InceptionWeightsError,
    frechet_distance,
    load_or_compute_reference,
    resolve_inception_weights,
)
from ddpm_lab.metrics.inception import default_weights_path
from tests.conftest import PicklePayload


def write_folder(folder, seed, n=12, size=16, shift=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        base = rng.integers(0, 200, (size, size, 3)) + shift
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_frechet_distance_closed_form_for_gaussians():
    # For diagonal covariances FID = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    a = GaussianStats(np.array([0.0, 1.0]), np.diag([4.0, 1.0]), 10)
    b = GaussianStats(np.array([1.0, 1.0]), np.diag([1.0, 9.0]), 10)
    assert frechet_distance(a, b) == pytest.approx(1 + (2 - 1) ** 2 + (1 - 3) ** 2)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-12)


@pytest.mark.slow
def test_ddpm_fid_equals_torch_fidelity(tmp_path, inception_weights, capsys):
    from torch_fidelity import calculate_metrics

    a = write_folder(tmp_path / "a", 0)
    b = write_folder(tmp_path / "b", 1, shift=40)
    assert (
        fid_main(
            [
                str(a),
                str(b),
                "--inception-weights",
                str(inception_weights),
                "--device",
                "cpu",
                "--kid-subset-size",
                "6",
                "--json",
                str(tmp_path / "out.json"),
            ]
        )
        == 0
    )
    ours = json.loads((tmp_path / "out.json").read_text())
    theirs = calculate_metrics(
        input1=str(a),
        input2=str(b),
        cuda=False,
        fid=True,
        kid=True,
        isc=True,
        kid_subset_size=6,
        feature_extractor_weights_path=str(inception_weights),
        verbose=False,
        cache=False,
    )
    assert ours["fid"] > 1.0, "random-weight features must still separate the two sets"
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert ours["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3, abs=1e-6)
    assert ours["is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-3)
    assert ours["protocol"]["input1_num_images"] == 12 and "no antialias" in ours["protocol"]["resize"]


@pytest.mark.slow
def test_fid_of_a_set_against_itself_is_zero(tmp_path, inception_weights):
    a = write_folder(tmp_path / "a", 0)
    assert (
        fid_main(
            [
                str(a),
                str(a),
                "--inception-weights",
                str(inception_weights),
                "--device",
                "cpu",
                "--no-kid",
                "--json",
                str(tmp_path / "out.json"),
            ]
        )
        == 0
    )
    assert abs(json.loads((tmp_path / "out.json").read_text())["fid"]) < 1e-3


@pytest.mark.slow
def test_reference_cache_is_reused_and_rekeyed(tmp_path, inception_weights):
    images = [
        torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
        for i in range(6)
    ]
    extractor = InceptionFeatures(inception_weights)
    first = load_or_compute_reference(images, "toyset", "train", extractor, tmp_path)
    assert not first.from_cache and extractor.images_seen == 6
    second = load_or_compute_reference(images, "toyset", "train", extractor, tmp_path)
    assert second.from_cache and extractor.images_seen == 6, "second run must not recompute"
    assert np.array_equal(second.stats.cov, first.stats.cov)
    third = load_or_compute_reference(images, "toyset", "train", extractor, tmp_path, num_images=5)
    assert not third.from_cache and third.path != first.path and extractor.images_seen == 11


def test_ddpm_fid_against_a_dataset_reference(tmp_path, inception_weights, tiny_data_dir, capsys):
    a = write_folder(tmp_path / "a", 0, n=6, size=32)
    args = [
        str(a),
        "--ref",
        "cifar10:test",
        "--data-dir",
        str(tiny_data_dir),
        "--cache-dir",
        str(tmp_path / "c"),
        "--inception-weights",
        str(inception_weights),
        "--device",
        "cpu",
        "--kid-subset-size",
        "4",
    ]
    assert fid_main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"]["input2"] == "cifar10:test" and out["protocol"]["input2_num_images"] == 8
    assert math.isfinite(out["fid"]) and len(list((tmp_path / "c").glob("fid_ref_cifar10_test_32px_8_*.npz"))) == 1


def test_missing_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    with pytest.raises(
        InceptionWeightsError,
        match=r"download failed.*put it at .*hub/checkpoints/weights-incep"
        r".*metrics.inception_weights=PATH.*on_missing_weights=skip",
    ):
        resolve_inception_weights(None)
    assert default_weights_path() == tmp_path / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(InceptionWeightsError, match="does not exist"):
        resolve_inception_weights(tmp_path / "nope.pth")


def test_malicious_weights_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": PicklePayload(marker)}, path)
    with pytest.raises(InceptionWeightsError, match=r"refused by torch\.load"):
        resolve_inception_weights(path)
    assert not marker.exists()


def test_ddpm_fid_names_the_broken_images_of_a_folder(tmp_path, inception_weights, capsys):
    a = write_folder(tmp_path / "a", 0)
    (a / "broken.png").write_bytes(b"garbage")
    code = fid_main([str(a), str(a), "--inception-weights", str(inception_weights), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "ddpm-fid: 1 of the" in err and "broken.png" in err and "Traceback" not in err


def test_ddpm_fid_refuses_too_few_or_mixed_size_images_before_extracting(tmp_path, capsys, monkeypatch):
    """3 images with precision/recall on, or one folder of two sizes, stop before any Inception weights are even
    looked for, naming the folder and the option; 2 images once gave a negative interval bound."""

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted before the inputs were checked")

    monkeypatch.setattr("ddpm_lab.cli.fid.resolve_inception_weights", no_extraction)
    few, many = write_folder(tmp_path / "few", 0, n=3), write_folder(tmp_path / "many", 1)
    assert fid_main([str(few), str(many)]) == 2
    err = capsys.readouterr().err
    assert f"{few} holds 3 images: precision/recall (k=3 nearest neighbours) needs at least 4" in err
    assert "--no-precision-recall" in err
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(many / "large.png")
    assert fid_main([str(many), str(many)]) == 2
    err = capsys.readouterr().err
    assert f"{many} mixes image sizes" in err and "16x16" in err and "24x24" in err and "Traceback" not in err


def test_the_fid_interval_never_goes_below_zero():
    """FID is a distance: a re-centred bootstrap bound under 0 (tiny sample sets) is cut at 0."""
    from ddpm_lab.metrics.fid import bootstrap_interval

    low, high = bootstrap_interval(1.0, np.array([-3.0, -2.0, 0.5, 1.0]))
    assert low == 0.0 and high > 1.0


@pytest.mark.slow
def test_fd_dinov2_equals_torch_fidelity(tmp_path, inception_weights, monkeypatch):
    """FD-DINOv2 through ddpm-fid and through torch-fidelity's own pipeline, on the same folders and the same
    (stand-in) DINOv2 from torch hub's dir."""
    from torch_fidelity import calculate_metrics

    from tests.dinov2_hub import write_dinov2_hub

    monkeypatch.setenv("TORCH_HOME", str(write_dinov2_hub(tmp_path / "torch_home")))
    a = write_folder(tmp_path / "a", 0)
    b = write_folder(tmp_path / "b", 1, shift=40)
    args = [str(a), str(b), "--inception-weights", str(inception_weights), "--device", "cpu", "--no-kid"]
    assert (
        fid_main([*args, "--fd-dinov2", "--dinov2-model", "dinov2-vit-s-14", "--json", str(tmp_path / "o.json")]) == 0
    )
    ours = json.loads((tmp_path / "o.json").read_text())
    theirs = calculate_metrics(
        input1=str(a), input2=str(b), cuda=False, fid=True, feature_extractor="dinov2-vit-s-14", verbose=False,
        cache=False,
    )  # fmt: skip
    assert ours["fd_dinov2"] > 1e-3, "the stand-in's features must still separate the two sets"
    assert ours["fd_dinov2"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert "dinov2-vit-s-14" in ours["protocol"]["fd_dinov2"]["feature_extractor"]


def test_fd_dinov2_without_the_hub_copy_says_what_to_copy(tmp_path, inception_weights, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    a = write_folder(tmp_path / "a", 0, n=4)
    args = [str(a), str(a), "--inception-weights", str(inception_weights), "--device", "cpu", "--no-kid"]
    assert fid_main([*args, "--fd-dinov2", "--dinov2-model", "dinov2-vit-b-14"]) == 2
    err = capsys.readouterr().err
    assert "facebookresearch_dinov2_main" in err and "dinov2_vitb14_pretrain.pth" in err and "TORCH_HOME" in err
