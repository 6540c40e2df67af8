"""A stand-in for torch hub's copy of facebookresearch/dinov2, for testing FD-DINOv2 offline.

torch-fidelity loads DINOv2 with ``torch.hub.load("facebookresearch/dinov2", "dinov2_vit*14")``, which offline
falls back to the hub dir's ``facebookresearch_dinov2_main``. This writes one there whose entry points build a
small random ViT with 14-pixel patches at 224x224 (torchvision's VisionTransformer, CLS token out), seeded,
so torch-fidelity's and ddpm-lab's pipelines can be compared on the same inputs and weights."""

from __future__ import annotations

from pathlib import Path

HUBCONF = """
import torch
from torchvision.models.vision_transformer import VisionTransformer

dependencies = ["torch", "torchvision"]


def _small_vit(**kwargs):
    torch.manual_seed(0)
    network = VisionTransformer(image_size=224, patch_size=14, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128)
    network.heads = torch.nn.Identity()  # the CLS token's features, as DINOv2's forward returns them
    return network


dinov2_vits14 = dinov2_vitb14 = dinov2_vitl14 = dinov2_vitg14 = _small_vit
"""


def write_dinov2_hub(torch_home: Path) -> Path:
    repo = torch_home / "hub" / "facebookresearch_dinov2_main"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "hubconf.py").write_text(HUBCONF)
    return torch_home
