"""The 2-D sample distance: the unbiased MMD^2 is signed around 0 for equal distributions; the distance is its
clipped root; a shifted set is far."""

import torch

from ddpm_lab.metrics import mmd_distance, mmd_squared


def test_unbiased_mmd2_is_signed_for_equal_distributions_and_the_distance_clips_it():
    values = [
        mmd_squared(torch.randn(300, 2, generator=torch.Generator().manual_seed(2 * s)),
                    torch.randn(300, 2, generator=torch.Generator().manual_seed(2 * s + 1)))
        for s in range(20)
    ]  # fmt: skip
    assert min(values) < 0 < max(values) and abs(sum(values) / len(values)) < 0.01
    a, b = torch.randn(300, 2), torch.randn(300, 2) + 1.0
    assert mmd_distance(a, b) == mmd_squared(a, b) ** 0.5 > 0.3
    # a set against itself: the cross term keeps k(x, x), the within terms drop it, so the estimate is below 0
    assert mmd_squared(a, a) < 0 and mmd_distance(a, a) == 0.0
