"""Samplers of training timesteps t ~ p(t) with importance weights 1 / (T p(t)) (IDDPM section 3.3).

``UniformTimestepSampler`` is the usual choice. ``LossAwareTimestepSampler`` samples t with probability
proportional to sqrt(E[L_t^2]) from a history of recent vlb terms, which lowers the variance of the L_vlb
estimate; it is uniform until every t has ``history_per_term`` losses.
"""

from __future__ import annotations

import torch

TIMESTEP_SAMPLERS = ("uniform", "loss_aware")


class TimestepSampler:
    def __init__(self, num_timesteps: int) -> None:
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}.")
        self.num_timesteps = num_timesteps

    def probabilities(self) -> torch.Tensor:
        """p(t) as a float64 tensor of shape (T,)."""
        return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (t, weights): int64 (B,) timesteps and float32 (B,) importance weights 1/(T p(t))."""
        p = self.probabilities()
        gen_device = generator.device if generator is not None else "cpu"
        t = torch.multinomial(p.to(gen_device).float(), batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p.to(t.device)[t])
        return t.to(device), weights.float().to(device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example losses for timesteps t (no-op for non-adaptive samplers)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class UniformTimestepSampler(TimestepSampler):
    pass


class LossAwareTimestepSampler(TimestepSampler):
    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        if not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob must be in [0, 1], got {uniform_prob}.")
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self.history = torch.zeros(num_timesteps, history_per_term, dtype=torch.float64)
        self.counts = torch.zeros(num_timesteps, dtype=torch.long)

    def warmed_up(self) -> bool:
        return bool((self.counts >= self.history_per_term).all())

    def probabilities(self) -> torch.Tensor:
        if not self.warmed_up():
            return super().probabilities()
        weights = (self.history**2).mean(dim=1).sqrt()
        weights = weights / weights.sum()
        return weights * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        # A ring buffer per timestep: the newest loss replaces the oldest once the row is full.
        for step, loss in zip(t.detach().cpu().tolist(), losses.detach().double().cpu().tolist(), strict=True):
            slot = int(self.counts[step]) % self.history_per_term
            self.history[step, slot] = loss
            self.counts[step] += 1

    def state_dict(self) -> dict:
        return {"history": self.history.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.history.copy_(state["history"])
        self.counts.copy_(state["counts"])


def make_timestep_sampler(name: str, num_timesteps: int) -> TimestepSampler:
    if name == "uniform":
        return UniformTimestepSampler(num_timesteps)
    if name == "loss_aware":
        return LossAwareTimestepSampler(num_timesteps)
    raise ValueError(f"Unknown timestep sampler {name!r}; choose one of {', '.join(TIMESTEP_SAMPLERS)}.")
