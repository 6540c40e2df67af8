import gzip
import json
import pickle

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_lab.data import (
    CelebADataModule,
    CIFAR10DataModule,
    DatasetFilesError,
    DigitsDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    Toy2DDataModule,
)
from tests.conftest import FAST_TRAINER, TINY_UNET, PicklePayload, compose_config
from tests.data_files import write_tiny_celeba, write_tiny_cifar10, write_tiny_mnist


def first_batch(dm):
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_idx_files(tmp_path, gz):
    write_tiny_mnist(tmp_path, n_train=40, n_test=16, gz=gz)
    dm = MNISTDataModule(data_dir=tmp_path, batch_size=8, download=False)
    dm.setup()
    assert len(dm.train_set) == 40 and len(dm.val_set) == 16
    assert dm.sample_shape == (1, 28, 28)
    # Image i is the constant 6*i: check the exact pixel scaling to [-1, 1].
    assert torch.allclose(dm.train_set[5], torch.full((1, 28, 28), 30 / 127.5 - 1))
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (8, 1, 28, 28) and batch.min() >= -1 and batch.max() <= 1


def test_mnist_resizes_to_the_configured_size(tmp_path):
    write_tiny_mnist(tmp_path)
    dm = MNISTDataModule(data_dir=tmp_path, image_size=32, batch_size=4, download=False, random_flip=False)
    assert first_batch(dm).shape == (4, 1, 32, 32)
    # image i is the constant 6*i: resized, it is still that constant, scaled to [-1, 1]
    for i in (0, 7, 39):
        torch.testing.assert_close(dm.train_set[i], torch.full((1, 32, 32), 6 * i / 127.5 - 1))


def test_cifar10_reads_python_batches_and_flips(tmp_path):
    folder = write_tiny_cifar10(tmp_path, per_batch=8, n_test=8)
    dm = CIFAR10DataModule(data_dir=tmp_path, batch_size=4, download=False)
    dm.setup()
    assert len(dm.train_set) == 40 and len(dm.val_set) == 8
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f)["data"][0].reshape(3, 32, 32)
    assert torch.equal(dm.images("train")[0], torch.from_numpy(raw))
    torch.manual_seed(0)
    views = {tuple(dm.train_set[0].flatten()[:40].tolist()) for _ in range(20)}
    assert len(views) == 2, "random horizontal flip gives the image and its mirror"


def test_celeba_reads_aligned_images_and_partition(tmp_path):
    write_tiny_celeba(tmp_path, counts=(10, 4, 4))
    dm = CelebADataModule(data_dir=tmp_path, batch_size=5, download=False, random_flip=False)
    dm.setup()
    assert len(dm.train_set) == 10 and len(dm.val_set) == 4
    x = dm.train_set[0]
    assert x.shape == (3, 64, 64)
    # Image 1 has colour (20, 100, 200) everywhere; JPEG keeps flat colours within a few levels.
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor([20, 100, 200]) / 127.5 - 1, atol=0.05)
    assert first_batch(dm).shape == (5, 3, 64, 64)


def test_digits_offline_split_is_fixed():
    dm = DigitsDataModule(batch_size=16)
    dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 1797
    assert len(dm.val_set) == 180
    assert torch.equal(DigitsDataModule().images("val").images, dm.images("val").images)
    x = first_batch(dm)
    assert x.shape == (16, 1, 16, 16) and x.min() == -1.0


def test_image_folder(tmp_path):
    for i in range(6):
        Image.new("RGB", (40 + i, 30), (i * 40, 0, 0)).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    dm = ImageFolderDataModule(path=tmp_path, image_size=8, batch_size=2, val_fraction=0.34)
    dm.setup()
    assert len(dm.train_set) == 4 and len(dm.val_set) == 2
    assert first_batch(dm).shape == (2, 3, 8, 8)
    # every image once, across the splits, centre-cropped and resized with its flat colour kept
    images = [dm.images(split)[i] for split in ("train", dm.val_split) for i in range(len(dm.images(split)))]
    assert sorted(int(x[0].float().mean()) for x in images) == [0, 40, 80, 120, 160, 200]
    assert all(int(x[1:].max()) == 0 for x in images)


@pytest.mark.parametrize(
    ("make", "layout"),
    [
        (lambda d: MNISTDataModule(data_dir=d, download=False), r"MNIST/raw/ holding train-images-idx3-ubyte"),
        (lambda d: CIFAR10DataModule(data_dir=d, download=False), r"cifar-10-batches-py/ holding data_batch_1"),
        (lambda d: CelebADataModule(data_dir=d, download=False), r"img_align_celeba/.*list_eval_partition.txt"),
        (lambda d: ImageFolderDataModule(path=d / "nowhere"), r"does not exist \(set data.path"),
    ],
)
def test_missing_data_names_the_layout(tmp_path, make, layout):
    with pytest.raises(DatasetFilesError, match=layout):
        make(tmp_path).setup()


def test_offline_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    """With download=True and no network, prepare_data fails; setup then says where the files go."""
    import torchvision.datasets.mnist as tv_mnist

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", no_network)
    dm = MNISTDataModule(data_dir=tmp_path, download=True)
    with pytest.raises(DatasetFilesError, match=r"could not download mnist.*network unreachable.*MNIST/raw/ holding"):
        dm.prepare_data()


def test_truncated_mnist_file_is_named(tmp_path):
    raw = write_tiny_mnist(tmp_path)
    path = raw / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:1000]))
    with pytest.raises(DatasetFilesError, match=r"train-images-idx3-ubyte is truncated or corrupted"):
        MNISTDataModule(data_dir=tmp_path, download=False).setup()


def test_malicious_cifar_batch_is_refused(tmp_path):
    folder = write_tiny_cifar10(tmp_path)
    marker = tmp_path / "pwned"

    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": PicklePayload(marker)}))
    with pytest.raises(DatasetFilesError, match=r"data_batch_3 is not a readable CIFAR-10 batch.*refusing"):
        CIFAR10DataModule(data_dir=tmp_path, download=False).setup()
    assert not marker.exists()


@pytest.mark.parametrize("name", ["swiss_roll", "moons", "s_curve"])
def test_toy2d_splits_are_standardised_and_distinct(name):
    dm = Toy2DDataModule(name=name, num_train=3000, num_val=500, num_test=500)
    train, val = dm.points("train"), dm.points("val")
    assert train.shape == (3000, 2) and val.shape == (500, 2)
    assert torch.allclose(train.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(train.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    assert not torch.equal(val[:10], train[:10])
    assert first_batch(dm).shape == (256, 2)
    with pytest.raises(ValueError, match="Unknown toy data set 'spiral'"):
        Toy2DDataModule(name="spiral")


def test_resize_rounds_and_keeps_constants():
    from ddpm_lab.data.image_datasets import resize_uint8

    flat = np.full((1, 1, 8, 8), 77, dtype=np.uint8)
    assert (resize_uint8(flat, 16) == 77).all()


def test_a_training_set_smaller_than_the_batch_is_a_start_up_error(tmp_path, tiny_data_dir):
    """drop_last gave zero batches and Lightning stopped silently with global_step 0 and status completed."""
    from ddpm_lab.cli.train import train
    from tests.conftest import FAST_TRAINER, TINY_UNET, compose_config

    cfg = compose_config(
        "train",
        tmp_path,
        [
            "data=cifar10",
            f"paths.data_dir={tiny_data_dir}",
            "data.batch_size=64",
            "logger=csv",
            *FAST_TRAINER,
            *TINY_UNET,
        ],
    )
    with pytest.raises(ValueError, match=r"has 40 items, 40 per rank on 1 rank\(s\), fewer than data.batch_size=64"):
        train(cfg)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "failed" and "data.batch_size to at most 40" in summary["error"]


def test_image_folder_lists_every_broken_image_at_start_up(tmp_path):
    """A broken image used to surface mid-training, and only the first one was named."""
    for i in range(4):
        Image.new("RGB", (12, 12), (i * 40, 0, 0)).save(tmp_path / f"img{i}.png")
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n")
    (tmp_path / "text.jpg").write_text("not a jpeg")
    dm = ImageFolderDataModule(path=tmp_path, image_size=8, batch_size=2)
    with pytest.raises(
        DatasetFilesError, match=r"2 of the 6 files of image folder .*cut\.png \(UnidentifiedImageError\); .*text\.jpg"
    ):
        dm.setup()


class RecordProgress(L.Callback):
    """What the resumable loader reads from Lightning, next to what it should be, at each batch's end (where
    ModelCheckpoint saves)."""

    def __init__(self):
        self.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loader = trainer.train_dataloader
        self.seen.append((trainer.current_epoch, batch_idx, loader.state_dict()))


@pytest.mark.slow
def test_lightning_progress_contract_the_resumable_loader_reads(tmp_path):
    """ResumableDataLoader reads ``trainer.fit_loop.epoch_loop.batch_progress.current.processed`` (Lightning
    has no public "batches done this epoch"): this pins what it must say at checkpoint time, so a Lightning
    release that changes it fails here, not in a silently wrong resume (pyproject bounds the version too)."""
    from ddpm_lab.cli.builders import build_datamodule, build_module
    from ddpm_lab.data.resumable import ResumableDataLoader

    cfg = compose_config("train", tmp_path, ["logger=csv", *FAST_TRAINER, *TINY_UNET, "data.batch_size=256"])
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.sample_shape)
    record = RecordProgress()
    trainer = L.Trainer(
        max_steps=8, logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[record],
        limit_val_batches=0, enable_model_summary=False, use_distributed_sampler=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    assert isinstance(trainer.train_dataloader, ResumableDataLoader)
    assert [s for _, _, s in record.seen] == [{"epoch": e, "batches": b + 1} for e, b, _ in record.seen]
    assert {e for e, _, _ in record.seen} == {0, 1}, "the count starts again in the second epoch"
