"""FD-DINOv2 (Stein et al. 2023): the Frechet distance on DINOv2 ViT features instead of Inception's, through
torch-fidelity's DINOv2 extractor (images resized to 224x224 like TF1.x, ImageNet-normalised, CLS token).

torch-fidelity loads DINOv2 with ``torch.hub.load("facebookresearch/dinov2", ...)``: the hub's copy of that
repository and its weights file, both under torch's hub dir ($TORCH_HOME/hub). Offline, copy them there from a
machine that has run the load once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_dinov2 import MODEL_METADATA

DINOV2_MODELS = tuple(MODEL_METADATA)  # dinov2-vit-s-14 ... dinov2-vit-g-14
HUB_REPO = "facebookresearch_dinov2_main"


class DinoV2WeightsError(FileNotFoundError):
    """DINOv2 could not be loaded; the message says what to copy where."""


def _missing_message(model: str, reason: str) -> str:
    hub = Path(torch.hub.get_dir())
    entry = MODEL_METADATA[model]
    return (
        f'FD-DINOv2 needs DINOv2 ({model}) from torch hub, but {reason}. Offline, run `python -c "import torch; '
        f"torch.hub.load('facebookresearch/dinov2', '{entry}')\"` on a connected machine, then copy its "
        f"~/.cache/torch/hub/{HUB_REPO} and ~/.cache/torch/hub/checkpoints/{entry}_pretrain.pth to {hub}/ (set "
        "TORCH_HOME to put the hub elsewhere). To measure without it, set metrics.fid.fd_dinov2=false."
    )


def state_sha256(network: torch.nn.Module) -> str:
    """A digest of the loaded weights (whatever file or repo they came from), for the cache key."""
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


_LOADED: dict[tuple[str, str], torch.nn.Module] = {}


def load_dinov2(model: str, device: torch.device | str) -> torch.nn.Module:
    """torch-fidelity's DINOv2 extractor, loaded once per process and device (start-up validation and the
    callback itself both build it; a ViT-L is 300M weights)."""
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2

    if model not in DINOV2_MODELS:
        raise ValueError(f"metrics.fid.dinov2_model={model!r}; allowed values: {', '.join(DINOV2_MODELS)}.")
    key = (model, str(device))
    if key not in _LOADED:
        try:
            _LOADED[key] = FeatureExtractorDinoV2(model, ["dinov2"]).to(device)
        except Exception as err:  # offline without the hub's copy, a damaged file, ...: say what to do
            reason = f"loading it failed ({type(err).__name__}: {err})"
            raise DinoV2WeightsError(_missing_message(model, reason)) from err
    return _LOADED[key]


class DinoV2Features:
    """Callable: uint8 images (N, C, H, W), C in {1, 3} -> (features (N, D) float64 on CPU, None): the same
    interface as ``InceptionFeatures`` (no logits), so reference statistics are cached the same way."""

    def __init__(self, model: str = "dinov2-vit-l-14", device: torch.device | str = "cpu", batch_size: int = 50):
        self.network = load_dinov2(model, device)
        self.model, self.device, self.batch_size = model, torch.device(device), batch_size
        self.weights_sha256 = state_sha256(self.network)
        self.images_seen = 0

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 (N, 1|3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        features = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size].to(self.device)
            if chunk.shape[1] == 1:  # grey data sets are fed as RGB, as for Inception
                chunk = chunk.expand(-1, 3, -1, -1)
            (out,) = self.network(chunk)
            features.append(out.double().cpu())
        self.images_seen += len(images)
        return torch.cat(features), None

    def protocol(self) -> dict[str, str]:
        import torch_fidelity

        return {
            "feature_extractor": f"torch-fidelity DINOv2 {self.model} (torch hub facebookresearch/dinov2), CLS token",
            "torch_fidelity_version": torch_fidelity.__version__,
            "dinov2_weights_sha256": self.weights_sha256[:16],
            "resize": "bilinear to 224x224 like TF1.x (torch-fidelity), ImageNet normalisation",
            "uint8_conversion": "round((x + 1) * 127.5), clipped to [0, 255]",
            "statistics": "float64 mean and covariance",
        }
