"""Exponential moving average of a network's weights, used for sampling and evaluation (DDPM: 0.9999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Holds ``self.module``, a frozen copy of a network whose weights track an EMA of the original's.

    With ``warmup`` the decay at update n is min(decay, (1 + n) / (10 + n)), so early averages are not
    dominated by the random initialisation. The copy is an ordinary submodule, so it is saved and restored
    with the owner's state_dict (checkpoints carry it).
    """

    def __init__(self, network: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay} (DDPM uses 0.9999).")
        self.decay = decay
        self.warmup = warmup
        self.module = copy.deepcopy(network).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        # A host-side copy of num_updates: reading the buffer each step would stall the host on the GPU. Read
        # once (lazily) and again after a load_state_dict, which may change the buffer.
        self._host_updates: int | None = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._host_updates = None  # the loaded num_updates is read again at the next update
        super()._load_from_state_dict(*args, **kwargs)

    def _updates_so_far(self) -> int:
        if self._host_updates is None:
            self._host_updates = int(self.num_updates)
        return self._host_updates

    def current_decay(self) -> float:
        n = self._updates_so_far()
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """ema <- decay * ema + (1 - decay) * current, for every floating parameter; buffers are copied."""
        decay = self.current_decay()
        ema_params = [p for p in self.module.parameters() if p.dtype.is_floating_point]
        params = [p.detach() for p in network.parameters() if p.dtype.is_floating_point]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), network.buffers(), strict=True):
            ema_buffer.copy_(buffer)
        self.num_updates += 1
        self._host_updates = self._updates_so_far() + 1

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> EMA:
        # The averaged copy always runs in eval mode (no dropout), whatever its owner does.
        super().train(mode)
        self.module.eval()
        return self
