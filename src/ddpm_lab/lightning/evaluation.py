"""Evaluation during training: FID/KID/IS (``FIDCallback``) and NLL bits/dim (``NLLCallback``), correct under
DDP: every rank samples its own share with its own seed (exactly ``num_samples`` in total, no padding
duplicates), features are gathered, and every rank computes the same value inside the collective."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tqdm.auto import tqdm

from ..diffusion import balanced_labels, model_evaluations
from ..metrics import (
    InceptionFeatures,
    InceptionWeightsError,
    image_metrics,
    load_or_compute_reference,
    resolve_inception_weights,
)
from ..visualize import to_uint8
from .metrics_record import MetricsRecordLogger, write_summary


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


def publish(trainer: L.Trainer, metrics: dict[str, float], summary: dict[str, Any] | None = None) -> None:
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
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
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


class FIDCallback(PeriodicEvaluation):
    """Every ``every_n_steps`` (and at the last step) generate ``num_samples`` images with the EMA weights and
    log ``val/fid``, ``val/kid_mean`` and ``val/is`` against the real ``reference_split``; the best FID and its
    step go to the W&B summary and metrics.json, together with the full protocol of the measurement."""

    def __init__(
        self,
        every_n_steps: int | None = 50_000,
        num_samples: int = 10_000,
        batch_size: int = 500,
        sampler: str | None = "ddim",
        steps: int | None = 100,
        eta: float | None = 0.0,
        spacing: str | None = None,
        guidance_scale: float | None = None,
        use_ema: bool = True,
        reference_split: str | None = None,
        reference_num_images: int | None = None,
        inception_weights: str | None = None,
        on_missing_weights: str = "error",
        cache_dir: str | Path = ".cache/ddpm_lab",
        kid: bool = True,
        inception_score: bool = True,
        seed: int = 0,
        save_samples: bool = False,
        output_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if on_missing_weights not in ("error", "skip"):
            raise ValueError(f"metrics.fid.on_missing_weights={on_missing_weights!r}; allowed values: error, skip.")
        if num_samples < 2:
            raise ValueError(f"metrics.fid.num_samples={num_samples} is not valid: FID needs at least 2 samples.")
        self.check_every_n_steps(every_n_steps, "metrics.fid.every_n_steps")
        if batch_size < 1:
            raise ValueError("metrics.fid.batch_size must be >= 1.")
        self.every_n_steps, self.num_samples, self.batch_size = every_n_steps, num_samples, batch_size
        self.sampling = {
            "sampler": sampler,
            "steps": steps,
            "eta": eta,
            "spacing": spacing,
            "guidance_scale": guidance_scale,
        }
        self.use_ema, self.seed, self.kid, self.inception_score = use_ema, seed, kid, inception_score
        self.reference_split, self.reference_num_images = reference_split, reference_num_images
        self.cache_dir, self.save_samples, self.progress = Path(cache_dir), save_samples, progress
        self.output_dir = Path(output_dir) if output_dir else None
        self.disabled_reason: str | None = None
        self.weights_path: Path | None = None
        try:  # at start-up, not after hours of training
            self.weights_path = resolve_inception_weights(inception_weights)
        except InceptionWeightsError as err:
            if on_missing_weights == "error":
                raise
            self.disabled_reason = str(err)
            rank_zero_warn(f"FID is off for this run (metrics.fid.on_missing_weights=skip): {err}")
        self._extractor: InceptionFeatures | None = None
        self._reference = None
        self.best = {"fid": math.inf, "step": None}
        self.last_protocol: dict[str, Any] | None = None

    @staticmethod
    def logged_metrics(options: Mapping[str, Any]) -> tuple[str, ...]:
        """What a callback built from ``options`` (its config node) logs: nothing when it will be off for
        missing weights (on_missing_weights=skip), else FID and the KID/IS it is asked for."""
        if options.get("on_missing_weights", "error") == "skip":
            try:
                resolve_inception_weights(options.get("inception_weights"), download=False)
            except InceptionWeightsError:
                return ()
        kid = ("val/kid_mean", "val/kid_std") if options.get("kid", True) else ()
        inception_score = ("val/is", "val/is_std") if options.get("inception_score", True) else ()
        return ("val/fid", *kid, *inception_score)

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best.update(state_dict.get("best", {}))

    def _ensure_reference(self, trainer: L.Trainer, device: torch.device):
        if self._extractor is None:
            self._extractor = InceptionFeatures(self.weights_path, device)
        if self._reference is None:
            datamodule = trainer.datamodule
            split = self.reference_split or datamodule.reference_split
            self._reference = load_or_compute_reference(
                datamodule.images(split),
                datamodule.name,
                split,
                self._extractor,
                self.cache_dir,
                self.reference_num_images,
                progress=self.progress and trainer.global_rank == 0,
            )
            rank_zero_info(
                f"FID reference {datamodule.name}:{split}: "
                f"{'loaded from' if self._reference.from_cache else 'computed and cached in'} "
                f"{self._reference.path}"
            )
        return self._extractor, self._reference

    @torch.no_grad()
    def generate_shard(self, trainer: L.Trainer, pl_module) -> torch.Tensor:
        """This rank's share of the samples, as uint8 images, from a generator seeded by (seed, rank). A
        class-conditional model draws labels 0, 1, ..., C-1, 0, ... over the whole sample set (all ranks)."""
        sizes = shard_sizes(self.num_samples, trainer.world_size)
        size, offset = sizes[trainer.global_rank], sum(sizes[: trainer.global_rank])
        classes = pl_module.num_classes
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed * 1_000_003 + trainer.global_rank)
        chunks = []
        bar = tqdm(total=size, desc="FID sampling", disable=not (self.progress and trainer.global_rank == 0))
        for start in range(0, size, self.batch_size):
            n = min(self.batch_size, size - start)
            labels = None if classes is None else balanced_labels(n, classes, pl_module.device, start=offset + start)
            images = pl_module.generate(n, generator=generator, use_ema=self.use_ema, labels=labels, **self.sampling)
            chunks.append(to_uint8(images))
            bar.update(n)
        bar.close()
        return torch.cat(chunks) if chunks else torch.zeros(0, *pl_module.sample_shape, dtype=torch.uint8)

    def evaluate(self, trainer: L.Trainer, pl_module) -> dict[str, float] | None:
        if self.disabled_reason is not None or len(pl_module.sample_shape) != 3:
            return None
        extractor, reference = self._ensure_reference(trainer, pl_module.device)
        sizes = shard_sizes(self.num_samples, trainer.world_size)
        images = self.generate_shard(trainer, pl_module)
        pool, logits = extractor(images)
        pool = gather_rows(trainer, pool.float(), sizes).double()
        logits = gather_rows(trainer, logits.float(), sizes).double()
        values = image_metrics(pool, logits, reference.stats, reference.kid_features, self.kid, self.inception_score)
        step = trainer.global_step
        if values["fid"] < self.best["fid"]:
            self.best = {"fid": values["fid"], "step": step}
        settings = {**pl_module.sampling, **{k: v for k, v in self.sampling.items() if v is not None}}
        self.last_protocol = {
            "metric": "val/fid",
            "num_samples": len(pool),
            "reference": f"{reference.key['dataset']}:{reference.key['split']}",
            "reference_num_images": reference.stats.count,
            "resolution": int(images.shape[-1]) if len(images) else None,
            "sampler": settings["sampler"],
            "sampler_steps": settings["steps"],
            "eta": settings["eta"],
            "spacing": settings["spacing"],
            "conditional": pl_module.num_classes is not None,
            "guidance_scale": settings["guidance_scale"] if pl_module.num_classes is not None else None,
            "nfe": model_evaluations(settings["sampler"], settings["steps"] or pl_module.diffusion.num_timesteps),
            "weights": "ema" if self.use_ema else "raw",
            "kid_subset_size": values.get("kid_subset_size"),
            "world_size": trainer.world_size,
            **extractor.protocol(),
        }
        if self.save_samples and self.output_dir is not None:
            all_images = gather_rows(trainer, images, sizes)
            if trainer.global_rank == 0:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                np.savez(
                    self.output_dir / f"fid_samples_step_{step:07d}.npz", images=all_images.numpy(), pool=pool.numpy()
                )
        logged = {f"val/{k}": float(v) for k, v in values.items() if k != "kid_subset_size"}
        publish(
            trainer,
            logged,
            {
                "val/fid_best": self.best["fid"],
                "val/fid_best_step": self.best["step"],
                "fid_protocol": self.last_protocol,
            },
        )
        return logged


class NLLCallback(PeriodicEvaluation):
    """Every ``every_n_steps`` (and at the last step): the variational bound in bits/dim
    (``GaussianDiffusion.nll_bits_per_dim``) on a fixed subset (the first ``num_images``) of ``split``,
    sharded over ranks and averaged, logged as ``val/nll_bpd``. Images only (the decoder is 8-bit)."""

    def __init__(
        self,
        every_n_steps: int | None = 50_000,
        num_images: int = 256,
        batch_size: int = 64,
        split: str = "test",
        use_ema: bool = True,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.check_every_n_steps(every_n_steps, "metrics.nll.every_n_steps")
        if num_images < 1 or batch_size < 1:
            raise ValueError("metrics.nll: num_images and batch_size must be >= 1.")
        self.every_n_steps, self.num_images, self.batch_size = every_n_steps, num_images, batch_size
        self.split, self.use_ema, self.seed, self.progress = split, use_ema, seed, progress

    @staticmethod
    def logged_metrics(options: Mapping[str, Any]) -> tuple[str, ...]:
        return ("val/nll_bpd",)

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module) -> float | None:
        if len(pl_module.sample_shape) != 3:
            return None
        images = trainer.datamodule.images(self.split)
        indices = list(range(min(self.num_images, len(images))))[trainer.global_rank :: trainer.world_size]
        network = pl_module.ema.module if self.use_ema else pl_module.network
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed + trainer.global_rank)
        total = torch.zeros(2, dtype=torch.float64, device=pl_module.device)
        for start in range(0, len(indices), self.batch_size):
            x0 = torch.stack([images[i] for i in indices[start : start + self.batch_size]]).to(pl_module.device)
            x0 = x0.float() / 127.5 - 1.0
            bpd = pl_module.diffusion.nll_bits_per_dim(
                network, x0, generator=generator, progress=self.progress and trainer.global_rank == 0
            )
            total += torch.stack([bpd.sum(), torch.tensor(float(len(bpd)), device=bpd.device, dtype=bpd.dtype)])
        total = trainer.strategy.reduce(total, reduce_op="sum") if trainer.world_size > 1 else total
        value = float(total[0] / total[1])
        publish(
            trainer,
            {"val/nll_bpd": value},
            {
                "nll_protocol": {
                    "split": self.split,
                    "num_images": int(total[1]),
                    "weights": "ema" if self.use_ema else "raw",
                    "timesteps": pl_module.diffusion.num_timesteps,
                }
            },
        )
        return value
