"""A random-weight InceptionV3 in torch-fidelity's layout, for testing the FID pipeline offline.

Kaiming-normal init on conv/linear keeps activations from shrinking to zero through the 90-odd layers, so the
2048-d features vary between images and FIDs are not trivially 0."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch


def write_random_inception_weights(path: Path, seed: int = 0) -> Path:
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    # Build the module without torch-fidelity's weight loading (that is what the file is for).
    with (
        mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None),
    ):
        network = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path
