"""Reference statistics of real images, computed once and cached on disk.

The cache key holds everything that changes the numbers: data set, split, resolution, number of images and
the feature extractor (its weights' hash and torch-fidelity's version). A changed key is a different file, so
it is recomputed; sweep jobs and later runs with the same key reuse the file. Files are .npz (no pickles)
written through a temp file and a rename, so a killed job never leaves half a cache file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic_files import atomic_path
from .fid import GaussianStats
from .inception import InceptionFeatures

# KID compares feature sets, not Gaussians; a random subset this large is kept for it (80 MB as float32).
KID_REFERENCE_SIZE = 10_000


@dataclass
class ReferenceStats:
    stats: GaussianStats
    kid_features: np.ndarray
    key: dict[str, Any]
    path: Path
    from_cache: bool


def reference_key(dataset: str, split: str, resolution: int, num_images: int, extractor: InceptionFeatures) -> dict:
    return {
        "dataset": dataset,
        "split": split,
        "resolution": resolution,
        "num_images": num_images,
        **extractor.protocol(),
    }


def cache_path(cache_dir: str | Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"fid_ref_{key['dataset']}_{key['split']}_{key['resolution']}px_{key['num_images']}_{digest}.npz"
    return Path(cache_dir) / name


def uint8_batches(images: Any, num_images: int, batch_size: int = 250) -> Iterable[torch.Tensor]:
    """Batches of the first ``num_images`` of a Dataset of uint8 (C, H, W) tensors."""
    for start in range(0, num_images, batch_size):
        yield torch.stack([images[i] for i in range(start, min(start + batch_size, num_images))])


def load_or_compute_reference(
    images: Any,
    dataset: str,
    split: str,
    extractor: InceptionFeatures,
    cache_dir: str | Path,
    num_images: int | None = None,
    progress: bool = False,
) -> ReferenceStats:
    """Reference statistics of ``images`` (uint8 Dataset): from the cache if its key matches, else computed
    (one Inception pass) and cached."""
    total = len(images) if num_images is None else min(num_images, len(images))
    if total < 2:
        raise ValueError(f"the FID reference {dataset}:{split} has {total} images; at least 2 are needed.")
    resolution = int(images[0].shape[-1])
    key = reference_key(dataset, split, resolution, total, extractor)
    path = cache_path(cache_dir, key)
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            stored_key = json.loads(str(data["key"]))
            if stored_key == key:
                stats = GaussianStats(data["mean"], data["cov"], int(data["count"]))
                return ReferenceStats(stats, data["kid_features"], key, path, from_cache=True)
    pools = []
    batches = uint8_batches(images, total)
    for batch in tqdm(batches, total=-(-total // 250), desc=f"FID reference {dataset}:{split}", disable=not progress):
        pools.append(extractor(batch)[0])
    features = torch.cat(pools).numpy()
    stats = GaussianStats.from_features(features)
    keep = np.random.RandomState(0).permutation(len(features))[:KID_REFERENCE_SIZE]
    kid_features = features[np.sort(keep)].astype(np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a file object: np.savez adds no suffix
        np.savez(
            handle,
            mean=stats.mean,
            cov=stats.cov,
            count=stats.count,
            kid_features=kid_features,
            key=json.dumps(key, sort_keys=True),
        )
    return ReferenceStats(stats, kid_features, key, path, from_cache=False)
