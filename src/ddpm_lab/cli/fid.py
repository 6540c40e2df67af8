"""``ddpm-fid``: FID (+ its bootstrap interval, KID, IS, precision/recall) between two image folders, or a
folder and a data set's cached reference.

    ddpm-fid samples/ real_images/
    ddpm-fid samples/ --ref cifar10:train --data-dir data --inception-weights weights-inception-2015-12-05-6726825d.pth

Folders are searched recursively for .png/.jpg/.jpeg/.bmp/.webp/.tif(f); images are read as RGB uint8 at their own
size (the Inception resize to 299 is part of the protocol) and an .npz with ``arr_0`` (N, H, W, C) uint8 is
accepted too. Prints the numbers and the protocol as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.image_datasets import check_image_files, image_files
from ..metrics import (
    GaussianStats,
    InceptionFeatures,
    InceptionWeightsError,
    MetricOptions,
    combine_evaluations,
    image_metrics,
    load_or_compute_reference,
    resolve_inception_weights,
)
from ..metrics.dinov2 import DINOV2_MODELS, DinoV2Features, DinoV2WeightsError
from ..metrics.fid import BOOTSTRAP_METHOD, PRC_NEIGHBORHOOD, frechet_distance
from .common import resolve_device, version_line


class FolderImages(Dataset):
    """uint8 (3, H, W) RGB images of a folder (recursive, sorted) or of an .npz's ``arr_0``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.array = None
        if path.is_file() and path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                self.array = data["arr_0"]
            self.files = []
        elif path.is_dir():
            self.files = image_files(path)
            check_image_files(self.files, f"folder {path}")
        else:
            raise FileNotFoundError(f"{path} is neither an image folder nor an .npz file.")
        if len(self) < 2:
            raise ValueError(f"{path} holds {len(self)} images; FID needs at least 2.")

    def __len__(self) -> int:
        return len(self.array) if self.array is not None else len(self.files)

    def check_one_size(self) -> None:
        """A ValueError naming two files of different sizes (an .npz array has one size by construction)."""
        sizes: dict[tuple[int, int], Path] = {}
        for path in self.files:
            with Image.open(path) as img:
                sizes.setdefault(img.size, path)
            if len(sizes) > 1:
                (a, first), (b, other) = list(sizes.items())[:2]
                raise ValueError(
                    f"{self.path} mixes image sizes: {first} is {a[0]}x{a[1]}, {other} is {b[0]}x{b[1]}. FID reads "
                    "one set at one size: resize them to one size first (e.g. the size the model generates)."
                )

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.array is not None:
            image = np.asarray(self.array[index])
            image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
        else:
            with Image.open(self.files[index]) as img:
                image = np.asarray(img.convert("RGB"))
        return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)


def features_of(
    images: Dataset, extractor, batch_size: int, desc: str = "Inception features"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features (and logits, for Inception) of every image, with a progress bar (stderr): 50k images take
    minutes. ``extractor``: InceptionFeatures or DinoV2Features."""
    pools, logits = [], []
    with tqdm(total=len(images), desc=desc, unit="img") as bar:
        for start in range(0, len(images), batch_size):
            batch = torch.stack([images[i] for i in range(start, min(start + batch_size, len(images)))])
            pool, logit = extractor(batch)
            pools.append(pool)
            logits.append(logit)
            bar.update(len(batch))
    return torch.cat(pools), (torch.cat(logits) if logits[0] is not None else None)


def reference_from_dataset(spec: str, data_dir: Path, extractor: InceptionFeatures, cache_dir: Path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from . import CONFIG_DIR

    name, _, split = spec.partition(":")
    config = CONFIG_DIR / "data" / f"{name}.yaml"
    if not config.exists() or name in ("toy2d", "image_folder"):
        choices = sorted(
            p.stem for p in (CONFIG_DIR / "data").glob("*.yaml") if p.stem not in ("toy2d", "image_folder")
        )
        raise ValueError(f"--ref {spec!r}: unknown data set {name!r}; use one of {', '.join(choices)} as NAME:SPLIT.")
    cfg = OmegaConf.load(config)
    cfg.data_dir = str(data_dir) if "data_dir" in cfg else None
    if cfg.data_dir is None:
        del cfg["data_dir"]
    cfg.download = False
    datamodule = instantiate(cfg)
    return load_or_compute_reference(
        datamodule.images(split or datamodule.reference_split),
        datamodule.name,
        split or datamodule.reference_split,
        extractor,
        cache_dir,
        progress=True,
    )


def fd_dinov2(args: argparse.Namespace, first: Dataset) -> tuple[float, dict]:
    """FD-DINOv2 of the first input against the second (folder or --ref), and the extractor's protocol."""
    extractor = DinoV2Features(args.dinov2_model, resolve_device(args.device), batch_size=args.batch_size)
    features1, _ = features_of(first, extractor, args.batch_size, desc="DINOv2 features")
    if args.ref:
        stats2 = reference_from_dataset(args.ref, Path(args.data_dir), extractor, Path(args.cache_dir)).stats
    else:
        features2, _ = features_of(FolderImages(Path(args.path2)), extractor, args.batch_size, desc="DINOv2 features")
        stats2 = GaussianStats.from_features(features2)
    return frechet_distance(GaussianStats.from_features(features1), stats2), extractor.protocol()


# Below the feature dimension the sample covariance is singular and FID is far from its large-sample value.
FEW_IMAGES = 2048


def check_inputs(args: argparse.Namespace, inputs: list[FolderImages]) -> None:
    """Counts and sizes, before any feature is extracted: precision/recall needs more than k images per input,
    and one folder's images must share one size (the Inception resize is per batch)."""
    for images in inputs:
        if not args.no_precision_recall and len(images) <= PRC_NEIGHBORHOOD:
            raise ValueError(
                f"{images.path} holds {len(images)} images: precision/recall (k={PRC_NEIGHBORHOOD} nearest neighbours) "
                f"needs at least {PRC_NEIGHBORHOOD + 1} per input. Add images, or pass --no-precision-recall."
            )
        images.check_one_size()
        if len(images) < FEW_IMAGES:
            print(
                f"ddpm-fid: warning: {images.path} holds {len(images)} images, fewer than the {FEW_IMAGES} Inception "
                "features: the FID is biased upward and not comparable with published values (papers use 50000).",
                file=sys.stderr,
            )


def compute(args: argparse.Namespace) -> dict:
    if not args.ref and not args.path2:
        raise ValueError("give a second folder, or --ref NAME:SPLIT for a data set's reference statistics.")
    first = FolderImages(Path(args.path1))
    second = None if args.ref else FolderImages(Path(args.path2))
    check_inputs(args, [first] if second is None else [first, second])
    weights = resolve_inception_weights(args.inception_weights)
    extractor = InceptionFeatures(weights, resolve_device(args.device), batch_size=args.batch_size)
    pool1, logits1 = features_of(first, extractor, args.batch_size)
    if args.ref:
        reference = reference_from_dataset(args.ref, Path(args.data_dir), extractor, Path(args.cache_dir))
        stats2, features2, second_name, count2 = (
            reference.stats,
            reference.kid_features,
            args.ref,
            reference.stats.count,
        )
    else:
        pool2, _ = features_of(second, extractor, args.batch_size)
        stats2, features2, second_name, count2 = (
            GaussianStats.from_features(pool2),
            pool2.numpy(),
            args.path2,
            len(pool2),
        )
    options = MetricOptions(
        kid=not args.no_kid,
        kid_subset_size=args.kid_subset_size,
        precision_recall=not args.no_precision_recall,
        bootstrap=args.bootstrap,
    )
    result = combine_evaluations([image_metrics(pool1, logits1, stats2, features2, options)])
    kid_size = result.pop("kid_subset_size", None)
    dinov2 = fd_dinov2(args, first) if args.fd_dinov2 else None
    if dinov2 is not None:
        result["fd_dinov2"] = dinov2[0]
    result["protocol"] = {
        "input1": args.path1,
        "input1_num_images": len(first),
        "input2": second_name,
        "input2_num_images": count2,
        **({"kid_subset_size": kid_size} if not args.no_kid else {}),
        **({"bootstrap": f"{args.bootstrap} replicates, {BOOTSTRAP_METHOD}"} if args.bootstrap else {}),
        **({"precision_recall": f"k={PRC_NEIGHBORHOOD}"} if options.precision_recall else {}),
        **({"fd_dinov2": dinov2[1]} if dinov2 is not None else {}),
        **extractor.protocol(),
    }
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddpm-fid", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line("ddpm-fid"))
    p.add_argument("path1", help="folder of images (or .npz with arr_0)")
    p.add_argument("path2", nargs="?", help="second folder of images (or .npz)")
    p.add_argument("--ref", help="data set reference NAME:SPLIT instead of path2, e.g. cifar10:train")
    p.add_argument("--data-dir", default="data", help="where --ref's data set lives (default: data)")
    p.add_argument("--cache-dir", default=".cache/ddpm_lab", help="reference statistics cache")
    p.add_argument("--inception-weights", help="InceptionV3 weights file (offline use)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--no-kid", action="store_true")
    p.add_argument("--no-precision-recall", action="store_true", help="skip precision/recall (k=3)")
    p.add_argument(
        "--bootstrap", type=int, default=100, help="replicates for the FID's 95%% interval (default 100; 0 = none)"
    )
    p.add_argument("--fd-dinov2", action="store_true", help="also FD-DINOv2 (needs torch hub's DINOv2; see README)")
    p.add_argument("--dinov2-model", default="dinov2-vit-l-14", choices=DINOV2_MODELS)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the result to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = compute(args)
    except (InceptionWeightsError, DinoV2WeightsError, FileNotFoundError, ValueError) as err:
        print(f"ddpm-fid: {err}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
