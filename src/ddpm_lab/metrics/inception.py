"""The standard FID feature extractor: torch-fidelity's InceptionV3 port of the TF graph used by the
original FID code (2048-d pool3 features and the 1008-way logits for the Inception Score, one pass).

Images enter as uint8 (N, 3, H, W); torch-fidelity resizes them to 299x299 with a bilinear filter that
matches TF 1.x bit for bit (no antialiasing: that is the original protocol; torchmetrics >= 1.8 defaults to
antialias=True, which changes FID).
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import torch

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[-1]
EXTRACTOR_NAME = "torch-fidelity InceptionV3 (inception-v3-compat), pool3 2048-d + logits_unbiased"
RESIZE_PROTOCOL = "bilinear to 299x299 like TF1.x (torch-fidelity), no antialias"


class InceptionWeightsError(FileNotFoundError):
    """The Inception weights are missing or unusable; the message says which file to put where."""


def default_weights_path() -> Path:
    """Where torch-fidelity caches the weights it downloads (torch hub's checkpoints folder)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def _missing_message(reason: str) -> str:
    return (
        f"FID needs the InceptionV3 weights {INCEPTION_FILE}, but {reason}. Offline, download it elsewhere from "
        f"{INCEPTION_URL} and either put it at {default_weights_path()} (torch-fidelity's cache) or pass its path "
        "with metrics.inception_weights=PATH (ddpm-fid: --inception-weights PATH). To run without FID, set "
        "metrics.fid.on_missing_weights=skip."
    )


def check_weights_file(path: Path) -> None:
    """Refuse a weights file that is not a plain tensor state dict (loading it runs no pickled code)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InceptionWeightsError(
            f"{path} is not a loadable InceptionV3 state dict (refused by torch.load(weights_only=True): "
            f"{type(err).__name__}: {err})."
        ) from err
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise InceptionWeightsError(f"{path} does not hold torch-fidelity InceptionV3 weights (no 'fc.weight').")


def resolve_inception_weights(path: str | Path | None = None, download: bool = True, timeout_s: float = 20.0) -> Path:
    """The weights file to use: ``path`` if given, else torch-fidelity's cache, else a download into that
    cache. Raises InceptionWeightsError with instructions if none works. Checked before any training."""
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise InceptionWeightsError(_missing_message(f"metrics.inception_weights={path} does not exist"))
        check_weights_file(path)
        return path
    cached = default_weights_path()
    if not cached.is_file():
        if not download:
            raise InceptionWeightsError(_missing_message(f"it is not in {cached.parent}"))
        cached.parent.mkdir(parents=True, exist_ok=True)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout_s)
        try:
            torch.hub.download_url_to_file(INCEPTION_URL, str(cached), progress=False)
        except Exception as err:
            raise InceptionWeightsError(
                _missing_message(f"it is not cached and the download failed ({type(err).__name__}: {err})")
            ) from err
        finally:
            socket.setdefaulttimeout(previous)
    check_weights_file(cached)
    return cached


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class InceptionFeatures:
    """Callable: uint8 images (N, C, H, W), C in {1, 3} -> (pool (N, 2048), logits (N, 1008)) float64 on CPU.

    ``calls`` counts the images passed through the network (tests use it to prove a cache hit).
    """

    def __init__(self, weights_path: Path, device: torch.device | str = "cpu", batch_size: int = 100) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights_path = Path(weights_path)
        check_weights_file(self.weights_path)
        self.weights_sha256 = file_sha256(self.weights_path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.network = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(self.weights_path)
        ).to(self.device)
        self.images_seen = 0

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 (N, 1|3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        pools, logits = [], []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size].to(self.device)
            if chunk.shape[1] == 1:  # grey data sets (MNIST, digits) are fed as RGB, as torch-fidelity does
                chunk = chunk.expand(-1, 3, -1, -1)
            pool, logit = self.network(chunk)
            pools.append(pool.double().cpu())
            logits.append(logit.double().cpu())
        self.images_seen += len(images)
        return torch.cat(pools), torch.cat(logits)

    def protocol(self) -> dict[str, str]:
        import torch_fidelity

        return {
            "feature_extractor": EXTRACTOR_NAME,
            "torch_fidelity_version": torch_fidelity.__version__,
            "inception_weights_sha256": self.weights_sha256[:16],
            "resize": RESIZE_PROTOCOL,
            "uint8_conversion": "round((x + 1) * 127.5), clipped to [0, 255]",
            "statistics": "float64 mean and covariance",
        }
