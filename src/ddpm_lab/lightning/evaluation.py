"""Evaluation during training: the periodic schedule, DDP sharding and gathering, and publishing to every
logger; NLL bits/dim (``NLLCallback``) here, FID and friends in ``fid_callback``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from ..checks import is_int
from ..run_record import write_summary
from .metrics_record import MetricsRecordLogger


def shard_sizes(total: int, world_size: int) -> list[int]:
    """Split ``total`` items over ranks: the first total % world ranks take one more. Sums to ``total``."""
    return [total // world_size + (rank < total % world_size) for rank in range(world_size)]


def gather_rows(trainer: L.Trainer, local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate every rank's rows (rank order). Ranks pad to the largest share for all_gather, and the
    padding is cut off again, so the result has exactly sum(sizes) rows."""
    if trainer.world_size == 1:
        return local
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: len(local)] = local
    gathered = trainer.strategy.all_gather(padded.to(trainer.strategy.root_device)).cpu()
    return torch.cat([gathered[rank, :size] for rank, size in enumerate(sizes)])


def log_to_every_logger(trainer: L.Trainer, metrics: dict[str, float], summary: dict[str, Any] | None = None) -> None:
    """Log to every logger at the current step (works from any hook) and keep callback_metrics current."""
    for name, value in metrics.items():
        trainer.callback_metrics[name] = torch.tensor(value)
    if trainer.global_rank != 0:
        return
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
        if summary and isinstance(logger, WandbLogger):
            logger.experiment.summary.update(summary)
        if summary and isinstance(logger, MetricsRecordLogger):
            write_summary(logger.save_dir, **summary)


class PeriodicEvaluation(L.Callback):
    """Runs ``evaluate(trainer, pl_module)`` every ``every_n_steps`` training steps (None: never on the way)
    and once at the end of training, whether it ends by max_steps or by max_epochs (max_steps=-1)."""

    every_n_steps: int | None
    _evaluated_at: int = -1

    @staticmethod
    def check_every_n_steps(value: int | None, key: str) -> None:
        if value is not None and (not is_int(value) or value < 1):
            raise ValueError(
                f"{key}={value!r} is not valid: use an integer >= 1, or null (at the end of training only)."
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if (self.every_n_steps and step % self.every_n_steps == 0) or step == trainer.max_steps:
            self._evaluated_at = step
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._evaluated_at != trainer.global_step:  # e.g. an epoch-bounded run: no "last step" was seen
            self._evaluated_at = trainer.global_step
            self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: L.Trainer, pl_module) -> Any:
        raise NotImplementedError


class NLLCallback(PeriodicEvaluation):
    """Every ``every_n_steps`` (and at the last step): the variational bound in bits/dim
    (``GaussianDiffusion.nll_bits_per_dim``) on a fixed subset (the first ``num_images``) of ``split``,
    sharded over ranks and averaged, logged as ``val/nll_bpd``. Images only (the decoder is 8-bit). For the
    continuous-time objectives (edm, flow_matching): the probability-flow ODE's likelihood of the dequantised
    images instead (Hutchinson divergence, Heun over ``ode_steps`` steps: 2 network evaluations and backward
    passes each), logged as ``val/ode_nll_bpd`` so it is never ranked with the bound."""

    datamodule_needs: ClassVar[dict[str, tuple[str, ...]]] = {"image": ("images",)}

    def __init__(
        self,
        every_n_steps: int | None = 50_000,
        num_images: int = 256,
        batch_size: int = 64,
        split: str = "test",
        use_ema: bool = True,
        seed: int = 0,
        progress: bool = True,
        ode_steps: int = 64,
    ) -> None:
        super().__init__()
        self.check_every_n_steps(every_n_steps, "metrics.nll.every_n_steps")
        if isinstance(ode_steps, bool) or not isinstance(ode_steps, int) or ode_steps < 1:
            raise ValueError(f"metrics.nll.ode_steps={ode_steps!r} is not valid: use an integer >= 1 (64 is usual).")
        self.ode_steps = ode_steps
        if num_images < 1 or batch_size < 1:
            raise ValueError("metrics.nll: num_images and batch_size must be >= 1.")
        self.every_n_steps, self.num_images, self.batch_size = every_n_steps, num_images, batch_size
        self.split, self.use_ema, self.seed, self.progress = split, use_ema, seed, progress

    @staticmethod
    def logged_metrics(options: Mapping[str, Any]) -> tuple[str, ...]:
        return ("val/nll_bpd", "val/ode_nll_bpd")  # which one: the objective's ``nll_metric``

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module) -> float | None:
        if len(pl_module.sample_shape) != 3:
            return None
        images = trainer.datamodule.images(self.split)
        indices = list(range(min(self.num_images, len(images))))[trainer.global_rank :: trainer.world_size]
        network = pl_module.ema.module if self.use_ema else pl_module.network
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed + trainer.global_rank)
        total = torch.zeros(2, dtype=torch.float64, device=pl_module.device)
        ode = {} if pl_module.diffusion.objective == "ddpm" else {"steps": self.ode_steps}
        for start in range(0, len(indices), self.batch_size):
            x0 = torch.stack([images[i] for i in indices[start : start + self.batch_size]]).to(pl_module.device)
            x0 = x0.float() / 127.5 - 1.0
            bpd = pl_module.diffusion.nll_bits_per_dim(
                network, x0, generator=generator, progress=self.progress and trainer.global_rank == 0, **ode
            )
            total += torch.stack([bpd.sum(), torch.tensor(float(len(bpd)), device=bpd.device, dtype=bpd.dtype)])
        total = trainer.strategy.reduce(total, reduce_op="sum") if trainer.world_size > 1 else total
        value = float(total[0] / total[1])
        log_to_every_logger(
            trainer,
            {pl_module.diffusion.nll_metric: value},
            {
                "nll_protocol": {
                    "split": self.split,
                    "num_images": int(total[1]),
                    "weights": "ema" if self.use_ema else "raw",
                    "timesteps": pl_module.diffusion.num_timesteps,
                    "objective": pl_module.diffusion.objective,
                    **({"ode_steps": self.ode_steps} if ode else {}),
                }
            },
        )
        return value


class EvaluateAtValidationEnd(L.Callback):
    """``ddpm-eval``: runs the FID/NLL callbacks' measurements once, after its validation pass."""

    def on_validation_end(self, trainer, pl_module) -> None:
        for callback in trainer.callbacks:
            if isinstance(callback, PeriodicEvaluation):
                callback.evaluate(trainer, pl_module)
