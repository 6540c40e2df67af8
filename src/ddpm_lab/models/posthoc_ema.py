"""Post-hoc EMA (Karras et al. 2024, EDM2, Sec. 3): track a few power-function EMAs during training, save
them now and then, and afterwards rebuild the EMA of any length as a least-squares combination of the saved
snapshots, so that the EMA length is an ablation axis without retraining.

A power-function EMA with exponent gamma averages the weights theta_1..theta_t of steps 1..t with
beta_t = (1 - 1/t)^(gamma + 1), which gives step tau the exact weight ((tau^(g+1) - (tau-1)^(g+1)) / t^(g+1));
its relative standard deviation sigma_rel = sqrt((g+1) / ((g+2)^2 (g+3))) (EDM2 eq. 3) does not depend on t.
Every profile here is held as its cumulative weight F(tau) on integer steps, so inner products of profiles
are exact sums over steps (on a coarser grid for long runs, where the error is O(1/t)).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic_files import atomic_path

# Inner products are exact sums over steps up to this many grid cells; longer runs use this many equal cells.
MAX_GRID = 50_000


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of the power-function EMA whose relative std is ``sigma_rel`` (EDM2 eq. 3 solved:
    sigma^2 (g+2)^2 (g+3) = g+1, the largest real root). EDM2: sigma_rel 0.05 -> 16.97, 0.10 -> 6.94."""
    if not 0 < sigma_rel < 0.28:  # sigma_rel(0) = sqrt(1/12) = 0.289: below it the root is a gamma > 0
        raise ValueError(f"sigma_rel={sigma_rel} is not valid: use a value in (0, 0.28); EDM2 uses 0.05-0.15.")
    s2 = sigma_rel**2
    roots = np.roots([s2, 7 * s2, 16 * s2 - 1, 12 * s2 - 1])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


class PowerEMA(nn.Module):
    """A frozen copy of a network tracking its power-function EMA with exponent ``gamma``; ``update`` takes
    the number of optimizer steps so far (t >= 1): t = 1 copies the weights, as beta_1 = 0."""

    def __init__(self, network: nn.Module, gamma: float) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.module = copy.deepcopy(network).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, network: nn.Module, step: int) -> None:
        beta = (1.0 - 1.0 / step) ** (self.gamma + 1.0)
        ema = [p for p in self.module.parameters() if p.dtype.is_floating_point]
        current = [p.detach() for p in network.parameters() if p.dtype.is_floating_point]
        torch._foreach_lerp_(ema, current, 1.0 - beta)
        for ema_buffer, buffer in zip(self.module.buffers(), network.buffers(), strict=True):
            ema_buffer.copy_(buffer)


def grid(last_step: int) -> np.ndarray:
    """Cell edges 0 = tau_0 < ... < tau_K = last_step on which profiles are compared (unit cells if short)."""
    return np.unique(np.linspace(0, last_step, min(last_step, MAX_GRID) + 1).round().astype(np.int64))


def power_cumulative(edges: np.ndarray, step: int, gamma: float) -> np.ndarray:
    """F(tau) of the power EMA taken at ``step``: (min(tau, step) / step)^(gamma + 1)."""
    return (np.minimum(edges, step) / step) ** (gamma + 1.0)


def exponential_cumulative(edges: np.ndarray, step: int, decay: float, warmup: bool) -> np.ndarray:
    """F(tau) of ``models.ema.EMA`` after ``step`` updates (decay min(decay, tau / (9 + tau)) at update tau
    with warm-up). F(0) is the weight left on the initial weights theta_0, which no snapshot holds."""
    tau = np.arange(1, step + 1, dtype=np.float64)
    betas = np.minimum(decay, tau / (9.0 + tau)) if warmup else np.full(step, decay)
    # weight of theta_tau: (1 - beta_tau) prod_{s > tau} beta_s; of theta_0: prod_s beta_s
    log_after = np.concatenate([np.cumsum(np.log(betas)[::-1])[::-1][1:], [0.0]])
    weights = (1 - betas) * np.exp(log_after)
    cumulative = np.concatenate([[np.exp(np.log(betas).sum())], weights]).cumsum()
    return cumulative[np.minimum(edges, step)]


def profile_masses(cumulative: np.ndarray) -> np.ndarray:
    return np.diff(cumulative)


# A rebuilt EMA is refused when its weight profile is further than this (L1 distance, of at most 2) from the one
# asked for: its weights would be some other average. Measured with EDM2's two stored profiles (0.05, 0.10),
# snapshots every 5% of 4000 steps: a stored profile is exact, sigma_rel 0.03-0.2 are within 0.025, 0.25 is
# 0.05, 0.02 is 0.09; 50 snapshots over 100k steps match 0.01-0.25 within 0.09. Half a snapshot interval past
# the newest snapshot (no snapshot at the step asked for) is 0.3-1.2 off.
MAX_PROFILE_ERROR = 0.1


def reconstruction_coefficients(
    snapshots: Sequence[tuple[int, float]], target_cumulative: np.ndarray, edges: np.ndarray
) -> np.ndarray:
    """Least-squares weights x of the snapshots ((step, gamma) each) whose combined profile is closest to the
    target's (both as cell masses; the inner product divides by the cell width, exact for unit cells), scaled to
    sum to 1 as EDM2's Algorithm 3 does (``phema.solve_posthoc_coefficients``): every profile is an average, so
    the combination must be one too, or a constant network would come back scaled."""
    width = np.diff(edges).astype(np.float64)
    masses = np.stack([profile_masses(power_cumulative(edges, t, g)) for t, g in snapshots])
    target = profile_masses(target_cumulative)
    gram = (masses / width) @ masses.T
    rhs = (masses / width) @ target
    coefficients = np.linalg.lstsq(gram, rhs, rcond=1e-12)[0]
    total = coefficients.sum()
    if not abs(total) > 1e-6:  # the snapshots carry none of the target's weight
        raise ValueError("the snapshots share no steps with the EMA asked for: it cannot be rebuilt from them.")
    return coefficients / total


def profile_error(
    snapshots: Sequence[tuple[int, float]], coefficients: np.ndarray, target_cumulative: np.ndarray, edges: np.ndarray
) -> float:
    """The L1 distance between the reconstructed and the target weight profiles (0 = exact; 2 = disjoint)."""
    combined = sum(
        c * profile_masses(power_cumulative(edges, t, g)) for c, (t, g) in zip(coefficients, snapshots, strict=True)
    )
    return float(np.abs(combined - profile_masses(target_cumulative)).sum() + abs(target_cumulative[0]))


SNAPSHOT_PATTERN = re.compile(r"snapshot_(\d{8})\.pt$")


def save_snapshot(directory: str | Path, step: int, emas: Sequence[PowerEMA]) -> Path:
    """All tracked profiles at ``step`` in one file (written through a temp file: never half a snapshot)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"snapshot_{step:08d}.pt"
    payload = {"step": step, "gammas": [e.gamma for e in emas], "states": [e.module.state_dict() for e in emas]}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


@dataclass
class Reconstruction:
    """EMA weights rebuilt from snapshots, with what they were rebuilt from and how well."""

    state_dict: dict[str, torch.Tensor]
    step: int
    snapshots: int
    profile_error: float


@dataclass
class ReconstructionPlan:
    """Which snapshots (steps and exponents, read without their weights) combine with which coefficients into
    the EMA asked for, and how far the combined weight profile is from the target's."""

    sources: list[Path | dict]  # a snapshot file, or a payload in memory (a checkpoint's tracked EMAs)
    profiles: list[tuple[int, float]]
    coefficients: np.ndarray
    profile_error: float


def snapshot_index(directory: str | Path, up_to_step: int) -> list[tuple[Path, int]]:
    directory = Path(directory)
    found = [(p, int(m.group(1))) for p in directory.glob("snapshot_*.pt") if (m := SNAPSHOT_PATTERN.search(p.name))]
    return sorted((p, s) for p, s in found if s <= up_to_step)


def _load_snapshot(source: Path | dict, mmap: bool = False) -> dict:
    return source if isinstance(source, dict) else torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)


def plan_reconstruction(
    directory: str | Path,
    at_step: int,
    sigma_rel: float | None = None,
    decay: float | None = None,
    warmup: bool = True,
    tracked: dict | None = None,
    max_profile_error: float | None = MAX_PROFILE_ERROR,
) -> ReconstructionPlan:
    """The least-squares plan for the EMA at ``at_step`` of relative std ``sigma_rel`` (power function), or of
    ``decay`` (the classic exponential EMA of ``models.ema.EMA``), from the snapshots saved at or before
    ``at_step`` under ``directory``, plus ``tracked`` (a snapshot-shaped payload {step, gammas, states}: the
    EMAs a checkpoint tracked at its own step, so a checkpoint between two snapshots is rebuilt at its step).
    Raises ValueError when the profile is further than ``max_profile_error`` from the target (None: no limit).
    Snapshot weights are memory-mapped, not read."""
    if (sigma_rel is None) == (decay is None):
        raise ValueError("reconstruct needs exactly one target: sigma_rel (power EMA) or decay (classic EMA).")
    index = snapshot_index(directory, at_step)
    sources: list[Path | dict] = [path for path, step in index if tracked is None or step != tracked["step"]]
    if tracked is not None and tracked.get("states") and tracked["step"] <= at_step:
        sources.append(tracked)
    if not sources:
        raise FileNotFoundError(
            f"no post-hoc EMA snapshots at or before step {at_step} in {directory}: train with "
            "callbacks.posthoc_ema.snapshot_every=N to save them."
        )
    headers = [_load_snapshot(source, mmap=True) for source in sources]
    profiles = [(int(h["step"]), float(g)) for h in headers for g in h["gammas"]]
    edges = grid(at_step)
    if sigma_rel is not None:
        target = power_cumulative(edges, at_step, sigma_rel_to_gamma(sigma_rel))
    else:
        target = exponential_cumulative(edges, at_step, decay, warmup)
    coefficients = reconstruction_coefficients(profiles, target, edges)
    error = profile_error(profiles, coefficients, target, edges)
    if max_profile_error is not None and error > max_profile_error:
        newest = max(step for step, _ in profiles)
        asked = f"sigma_rel={sigma_rel}" if sigma_rel is not None else f"decay={decay}"
        raise ValueError(
            f"the post-hoc EMA {asked} at step {at_step} cannot be rebuilt from the snapshots saved up to step "
            f"{newest} (power exponents {sorted({round(g, 2) for _, g in profiles})}): the best combination's "
            f"weight profile is {error:.3f} (L1) from the one asked for, over the limit {max_profile_error}. "
            "Rebuild at a snapshot step (or from a checkpoint that tracked the EMAs), ask for a relative std "
            "between the stored ones, or save snapshots more often (callbacks.posthoc_ema.snapshot_every)."
        )
    return ReconstructionPlan(sources, profiles, coefficients, error)


def reconstruct(
    directory: str | Path,
    at_step: int,
    sigma_rel: float | None = None,
    decay: float | None = None,
    warmup: bool = True,
    tracked: dict | None = None,
    max_profile_error: float | None = MAX_PROFILE_ERROR,
) -> Reconstruction:
    """The EMA weights of ``plan_reconstruction``'s plan (same arguments): its coefficients applied to the
    snapshots' weights, in float64, cast back to the snapshots' dtypes."""
    plan = plan_reconstruction(directory, at_step, sigma_rel, decay, warmup, tracked, max_profile_error)
    weights = iter(plan.coefficients)
    combined: dict[str, torch.Tensor] = {}
    reference: dict[str, torch.Tensor] = {}
    for source in plan.sources:
        for state in _load_snapshot(source)["states"]:
            c = float(next(weights))
            reference = state
            for key, value in state.items():
                if not value.dtype.is_floating_point:  # step counters and the like: the newest snapshot's
                    combined[key] = value.clone()
                    continue
                term = value.double() * c
                combined[key] = combined[key] + term if key in combined else term
    state = {k: v.to(reference[k].dtype) for k, v in combined.items()}
    return Reconstruction(state, at_step, len(plan.sources), plan.profile_error)
