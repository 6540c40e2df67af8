"""Class conditioning for the samplers: a class-conditional network ``network(x_t, t, y)`` becomes the
``model(x_t, t)`` every sampler takes, with classifier-free guidance (Ho & Salimans 2022, eq. 6):

    out = out(x_t, t, null) + s (out(x_t, t, y) - out(x_t, t, null))

s = 1 is the plain conditional model, s = 0 the unconditional one, s > 1 guides. Because the conversions
between eps, x0 and v are affine at fixed x_t with coefficients that depend on t only, mixing the raw outputs
is the same guidance whatever the network predicts. With a learned variance only the mean half is mixed; the
variance half is the conditional one (as in GLIDE).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ConditionalNetwork = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def drop_labels(labels: torch.Tensor, p_uncond: float, null_label: int, generator: torch.Generator | None = None):
    """Labels (B,) with each replaced by ``null_label`` with probability ``p_uncond`` (label dropout, which
    trains the unconditional model inside the conditional one)."""
    if p_uncond <= 0:
        return labels
    draws = torch.rand(labels.shape, generator=generator, device=generator.device if generator else labels.device)
    return torch.where(draws.to(labels.device) < p_uncond, torch.full_like(labels, null_label), labels)


def guided_model(
    network: ConditionalNetwork,
    labels: torch.Tensor,
    guidance_scale: float,
    null_label: int,
    mean_channels: int | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``model(x_t, t)`` for labels (B,) under guidance scale s (>= 0). s = 1 costs one network call per step,
    any other s one call on a doubled batch. ``mean_channels``: the data's channels when the output carries a
    learned variance half after them (None: the whole output is the mean part)."""
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0 (1 = conditional, 0 = unconditional), got {guidance_scale}.")
    if guidance_scale == 1.0:
        return lambda x, t: network(x, t, labels)
    null = torch.full_like(labels, null_label)
    if guidance_scale == 0.0:
        return lambda x, t: network(x, t, null)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        both = network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        split = cond.shape[1] if mean_channels is None else mean_channels
        mean = uncond[:, :split] + guidance_scale * (cond[:, :split] - uncond[:, :split])
        return torch.cat([mean, cond[:, split:]], dim=1) if split < cond.shape[1] else mean

    return model


def balanced_labels(
    num_samples: int, num_classes: int, device: torch.device | str | None = None, start: int = 0
) -> torch.Tensor:
    """Labels (num_samples,) of positions start, start+1, ... in 0, 1, ..., C-1, 0, 1, ...: every class equally
    often over a whole run drawn in pieces (a grid with C columns shows one class per column)."""
    return (start + torch.arange(num_samples, device=device)) % num_classes
