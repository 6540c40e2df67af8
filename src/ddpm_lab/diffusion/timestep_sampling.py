"""Samplers of training timesteps t ~ p(t) with importance weights 1 / (T p(t)) (IDDPM section 3.3).

``UniformTimestepSampler`` is the usual choice. ``LossAwareTimestepSampler`` samples t with probability
proportional to sqrt(E[L_t^2]) from a history of recent vlb terms, which lowers the variance of the L_vlb
estimate; it is uniform until every t has ``history_per_term`` losses.
"""

from __future__ import annotations

import torch

TIMESTEP_SAMPLERS = ("uniform", "loss_aware")


def _draw_device(device: torch.device | str, generator: torch.Generator | None) -> torch.device:
    """Random draws happen where the generator lives (on ``device`` without one)."""
    return generator.device if generator is not None else torch.device(device)


class TimestepSampler:
    """p(t) over T timesteps. ``adaptive`` samplers learn p(t) from the losses given to ``update``."""

    adaptive = False

    def __init__(self, num_timesteps: int) -> None:
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}.")
        self.num_timesteps = num_timesteps

    def probabilities(self, device: torch.device | str | None = None) -> torch.Tensor:
        """p(t) as a float64 tensor of shape (T,)."""
        return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64, device=device)

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (t, weights): int64 (B,) timesteps t ~ p(t) and float32 (B,) importance weights 1/(T p(t)).

        Drawn by inverse CDF on the generator's device (``device`` without one): no value goes through the host,
        so on a GPU the training step never waits for it.
        """
        draw = _draw_device(device, generator)
        p = self.probabilities(draw)
        cdf = torch.cumsum(p, dim=0)
        u = torch.rand(batch_size, dtype=p.dtype, device=draw, generator=generator) * cdf[-1]
        t = torch.searchsorted(cdf, u, right=True).clamp_(max=self.num_timesteps - 1)
        weights = 1.0 / (self.num_timesteps * p[t])
        return t.to(device), weights.float().to(device)

    def validation_time(self, generator: torch.Generator) -> torch.Tensor:
        """One fixed timestep (1,) drawn uniformly from an item's own generator (validation losses)."""
        return torch.randint(0, self.num_timesteps, (1,), generator=generator)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example losses for timesteps t (no-op for non-adaptive samplers)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class UniformTimestepSampler(TimestepSampler):
    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """t ~ U{0..T-1} (B,) int64 and weights 1 (B,) float32, drawn on the device (no host round trip)."""
        draw = _draw_device(device, generator)
        t = torch.randint(0, self.num_timesteps, (batch_size,), device=draw, generator=generator)
        return t.to(device), torch.ones(batch_size, device=device)


class LossAwareTimestepSampler(TimestepSampler):
    """The history lives on the device of the losses it is given, and every operation stays there."""

    adaptive = True

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        if not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob must be in [0, 1], got {uniform_prob}.")
        if history_per_term < 1:
            raise ValueError(f"history_per_term must be >= 1, got {history_per_term}.")
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        # A ring buffer of the last H losses per timestep, plus one scratch column (see update).
        self._ring = torch.zeros(num_timesteps, history_per_term + 1, dtype=torch.float64)
        self.counts = torch.zeros(num_timesteps, dtype=torch.long)

    @property
    def history(self) -> torch.Tensor:
        """(T, H) float64: the last H losses of each timestep (in ring order)."""
        return self._ring[:, : self.history_per_term]

    def _move(self, device: torch.device | str) -> None:
        device = torch.device(device)
        if self.counts.device != device:
            self._ring, self.counts = self._ring.to(device), self.counts.to(device)

    def warmed_up(self) -> torch.Tensor:
        """A bool scalar tensor: every timestep has H losses (kept on the device: no host sync)."""
        return (self.counts >= self.history_per_term).all()

    def probabilities(self, device: torch.device | str | None = None) -> torch.Tensor:
        """sqrt(E[L_t^2]) normalised, mixed with uniform_prob of the uniform p(t); uniform until warmed up."""
        if device is not None:
            self._move(device)
        uniform = super().probabilities(self.counts.device)
        rms = (self.history**2).mean(dim=1).sqrt()
        adaptive = rms / rms.sum() * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps
        return torch.where(self.warmed_up(), adaptive, uniform)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each loss to its timestep's ring buffer, in batch order, with tensor operations only."""
        self._move(t.device)
        order = torch.argsort(t.detach(), stable=True)
        t, losses = t.detach()[order].long(), losses.detach()[order].to(self._ring.dtype)
        rank = torch.arange(t.numel(), device=t.device) - torch.searchsorted(t, t)  # position among equal t
        per_t = torch.bincount(t, minlength=self.num_timesteps)
        slot = (self.counts[t] + rank) % self.history_per_term
        # Only the last H losses of a timestep survive; the earlier ones of a batch that brings more than H
        # are written to the scratch column instead (a mask would need the host to learn its size).
        survives = rank >= per_t[t] - self.history_per_term
        slot = torch.where(survives, slot, torch.full_like(slot, self.history_per_term))
        self._ring[t, slot] = losses
        self.counts += per_t

    def state_dict(self) -> dict:
        return {"history": self.history.cpu().clone(), "counts": self.counts.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.history.copy_(state["history"])
        self.counts.copy_(state["counts"])


def make_timestep_sampler(name: str, num_timesteps: int) -> TimestepSampler:
    if name == "uniform":
        return UniformTimestepSampler(num_timesteps)
    if name == "loss_aware":
        return LossAwareTimestepSampler(num_timesteps)
    raise ValueError(f"Unknown timestep sampler {name!r}; choose one of {', '.join(TIMESTEP_SAMPLERS)}.")
