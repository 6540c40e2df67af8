"""What a training step does with a non-finite loss (``module.nan_policy``): ``stop`` (the default) records the
first such step on the device, without a per-step host sync, and raises at the next log step naming the step
and its loss terms; ``skip`` skips the update (one scalar sync per step) and gives up after
``max_consecutive_nonfinite`` in a row."""

from __future__ import annotations

from typing import Any

import torch

NAN_POLICIES = ("stop", "skip")


def _describe(terms: dict[str, Any]) -> str:
    return ", ".join(f"{name}={float(torch.as_tensor(value).float().mean()):.4g}" for name, value in terms.items())


class NonFiniteLossPolicy:
    """Mixin of the DiffusionModule (a LightningModule): ``init_nan_policy`` in its __init__, then
    ``_step_is_finite`` (skip) or ``_record_nonfinite`` (stop) in its training step."""

    def init_nan_policy(self, nan_policy: str, max_consecutive_nonfinite: int) -> None:
        if nan_policy not in NAN_POLICIES:
            allowed = ", ".join(NAN_POLICIES)
            raise ValueError(f"module.nan_policy={nan_policy!r} is not valid; allowed values: {allowed}.")
        self.nan_policy = nan_policy
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.nonfinite_in_a_row = 0
        self.nonfinite_skipped = 0
        # stop policy: the first non-finite step and its loss terms, kept on the device (no per-step sync)
        self.register_buffer("first_nonfinite_step", torch.tensor(-1, dtype=torch.long), persistent=False)
        self._nonfinite_terms: dict[str, torch.Tensor] = {}

    def _step_is_finite(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> bool:
        """skip policy: one scalar host sync per step (all ranks agree, so DDP ranks skip together)."""
        finite = bool(self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True))
        if finite:
            self.nonfinite_in_a_row = 0
            return True
        self.nonfinite_in_a_row += 1
        self.nonfinite_skipped += 1
        self.log("train/nonfinite_skipped", float(self.nonfinite_skipped))
        if self.nonfinite_in_a_row > self.max_consecutive_nonfinite:
            raise FloatingPointError(
                f"{self.nonfinite_in_a_row} non-finite losses in a row up to step {self.global_step} "
                f"({_describe(terms)}); module.nan_policy=skip gives up after module.max_consecutive_nonfinite="
                f"{self.max_consecutive_nonfinite}. Lower the learning rate, check the data, or use precision=32."
            )
        return False

    def _record_nonfinite(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        first = (~torch.isfinite(loss)) & (self.first_nonfinite_step < 0)
        self.first_nonfinite_step.copy_(
            # torch.full is a device-side fill; torch.tensor(step, device=...) would copy from the host each step
            torch.where(first, torch.full((), self.global_step, device=self.device), self.first_nonfinite_step)
        )
        for name, value in terms.items():
            kept = self._nonfinite_terms.get(name, torch.zeros((), device=self.device))
            self._nonfinite_terms[name] = torch.where(first, value.detach().mean(), kept)

    def check_finite(self) -> None:
        """stop policy: raise if any step so far had a non-finite loss (one host read, at log/save time)."""
        step = int(self.first_nonfinite_step)
        if step >= 0:
            terms = {name: float(value) for name, value in self._nonfinite_terms.items()}
            raise FloatingPointError(
                f"non-finite loss at training step {step} ({_describe(terms)}); module.nan_policy=stop. The last "
                "checkpoint before it is intact. Lower the learning rate, check the data for NaNs, use "
                "precision=32, or set module.nan_policy=skip to skip such steps."
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.nan_policy == "stop" and self.global_step % max(self.trainer.log_every_n_steps, 1) == 0:
            self.check_finite()
