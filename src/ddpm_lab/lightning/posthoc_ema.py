"""``PostHocEMACallback``: tracks power-function EMAs of the network during training and saves them every
``snapshot_every`` steps under ``<run>/posthoc_ema/``, so ``ddpm-eval ema.posthoc_std=...`` can rebuild the
EMA of any length afterwards (EDM2's post-hoc EMA; the math is in ``models.posthoc_ema``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from ..checks import is_int
from ..models.posthoc_ema import PowerEMA, save_snapshot, sigma_rel_to_gamma, snapshot_index


class PostHocEMACallback(L.Callback):
    """Off (no copies, nothing written) while ``snapshot_every`` is null. Each tracked profile costs one
    copy of the network in memory and on disk per snapshot; the tracked EMAs go into checkpoints, so a resumed
    run continues them exactly."""

    def __init__(
        self, output_dir: str | Path, snapshot_every: int | None = None, sigma_rels: Sequence[float] = (0.05, 0.10)
    ) -> None:
        super().__init__()
        if snapshot_every is not None and (not is_int(snapshot_every) or snapshot_every < 1):
            raise ValueError(
                f"callbacks.posthoc_ema.snapshot_every={snapshot_every!r} is not valid: use an integer >= 1 "
                "(EDM2 saves every ~2% of training), or null to keep no post-hoc EMA."
            )
        if not sigma_rels:
            raise ValueError("callbacks.posthoc_ema.sigma_rels is empty: give at least one (EDM2: [0.05, 0.10]).")
        self.gammas = [sigma_rel_to_gamma(float(s)) for s in sigma_rels]
        self.output_dir, self.snapshot_every = Path(output_dir), snapshot_every
        self.emas: list[PowerEMA] | None = None
        self._updated_at = 0
        self._pending: dict[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        return self.snapshot_every is not None

    def _tracked(self, pl_module) -> list[PowerEMA]:
        if self.emas is None:
            self.emas = [PowerEMA(pl_module.network, g).to(pl_module.device) for g in self.gammas]
            if self._pending is not None:  # a resumed run: the checkpoint's EMAs, not fresh copies
                for ema, state in zip(self.emas, self._pending["states"], strict=True):
                    ema.module.load_state_dict(state)
                self._updated_at = self._pending["updated_at"]
                self._pending = None
        return self.emas

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self.enabled:
            return
        fresh = self.emas is None and self._pending is None
        self._tracked(pl_module)
        if fresh and trainer.global_step > 0:  # resumed from a checkpoint that kept no post-hoc EMAs
            self._updated_at = trainer.global_step
            rank_zero_warn(
                f"post-hoc EMA starts at step {trainer.global_step} (the checkpoint kept none): snapshots average "
                "the steps from there on, so EMAs rebuilt from them are not those of the whole run."
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.enabled or step == self._updated_at:  # gradient accumulation: one update per optimizer step
            return
        for ema in self._tracked(pl_module):
            ema.update(pl_module.network, step)
        self._updated_at = step
        if step % self.snapshot_every == 0:
            self._save(trainer, step)

    def on_train_end(self, trainer, pl_module) -> None:
        """The last step is always a snapshot, so the final EMA of any length can be rebuilt."""
        if not (self.enabled and self._updated_at):
            return
        saved = snapshot_index(self.output_dir, self._updated_at)
        if not saved or saved[-1][1] != self._updated_at:
            self._save(trainer, self._updated_at)

    def _save(self, trainer, step: int) -> None:
        if trainer.global_rank == 0:
            save_snapshot(self.output_dir, step, self.emas)

    def state_dict(self) -> dict[str, Any]:
        if self.emas is None:
            return {}
        states = [e.module.state_dict() for e in self.emas]
        return {"updated_at": self._updated_at, "gammas": self.gammas, "states": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("states"):
            if [round(g, 9) for g in state_dict["gammas"]] != [round(g, 9) for g in self.gammas]:
                raise ValueError(
                    "this checkpoint tracked post-hoc EMAs with other sigma_rels than "
                    "callbacks.posthoc_ema.sigma_rels now asks for; resume with the same sigma_rels (they are in "
                    "the run's config)."
                )
            self._pending, self.emas = state_dict, None


def tracked_emas(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The post-hoc EMAs a Lightning checkpoint tracked at its own step, in the snapshot format
    ({step, gammas, states}) that ``models.posthoc_ema.reconstruct`` takes as ``tracked``; None if it kept none."""
    state = (checkpoint.get("callbacks") or {}).get(PostHocEMACallback.__qualname__) or {}
    if not state.get("states"):
        return None
    return {"step": int(state["updated_at"]), "gammas": state["gammas"], "states": state["states"]}
