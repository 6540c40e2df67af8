"""Batches of class-conditional training: (images, labels) in, a ``model(x_t, t)`` for the core out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def split_batch(batch: Any, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, labels) of a batch: x (B, ...) alone for an unconditional model; (x, y) pairs for a conditional one,
    whose data module must then yield labels (``data.conditional=true``, set by ``conditioning=class``)."""
    if num_classes is None:
        return batch, None
    if not isinstance(batch, list | tuple) or len(batch) != 2:
        raise ValueError(
            "this network is class-conditional (num_classes set) but the batches carry no labels: set "
            "data.conditional=true (conditioning=class does)."
        )
    x, labels = batch
    return x, labels.long()


def with_labels(network: Callable, labels: torch.Tensor | None) -> Callable:
    """``network`` as the core's ``model(x_t, t)``: with ``labels`` (B,) bound as its third argument."""
    if labels is None:
        return network
    return lambda x, t: network(x, t, labels)
