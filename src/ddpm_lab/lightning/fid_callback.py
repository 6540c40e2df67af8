"""FID/KID/IS and precision/recall during training (``FIDCallback``), correct under DDP: every rank samples its
own share, each image from its own seed (exactly ``num_samples`` in total, no padding duplicates, the same set on
any number of ranks), features are gathered,
and every rank computes the same value inside the collective. ``num_evals`` > 1 repeats the measurement with
as many sampling seeds (EDM reports the minimum of 3); every measurement carries a bootstrap interval."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tqdm.auto import tqdm

from ..diffusion import balanced_labels, resolve_sampling
from ..diffusion.noise import per_sample_generators
from ..metrics import (
    InceptionFeatures,
    InceptionWeightsError,
    load_or_compute_reference,
    resolve_inception_weights,
)
from ..metrics.dinov2 import DinoV2Features
from ..metrics.fid import BOOTSTRAP_METHOD, PRC_NEIGHBORHOOD, GaussianStats, frechet_distance
from ..metrics.image_metrics import MetricOptions, combine_evaluations, image_metrics
from ..visualize import to_uint8
from .evaluation import PeriodicEvaluation, gather_rows, log_to_every_logger, shard_sizes

# How the sample set is seeded: a protocol field, so sets drawn before per-image seeds are never ranked with them.
SAMPLE_SEEDS = "per image: (seed, i)"


class FIDCallback(PeriodicEvaluation):
    """Every ``every_n_steps`` (and at the last step) generate ``num_samples`` images with the EMA weights and
    log ``val/fid`` (with its bootstrap interval ``val/fid_ci_low``/``_high``), ``val/kid_mean``, ``val/is``
    and ``val/precision``/``val/recall`` against the real ``reference_split``; with ``num_evals`` > 1 the
    mean over that many sample sets, and ``val/fid_min``/``val/fid_std``. The best FID and its step go to
    the W&B summary and metrics.json, together with the full protocol of the measurement."""

    datamodule_needs: ClassVar[dict[str, tuple[str, ...]]] = {"image": ("images", "name", "reference_split")}

    def __init__(
        self,
        every_n_steps: int | None = 50_000,
        num_samples: int = 10_000,
        num_evals: int = 1,
        batch_size: int = 500,
        sampler: str | None = "ddim",
        steps: int | None = 100,
        eta: float | None = None,
        spacing: str | None = "uniform",
        guidance_scale: float | None = None,
        use_ema: bool = True,
        reference_split: str | None = None,
        reference_num_images: int | None = None,
        inception_weights: str | None = None,
        on_missing_weights: str = "error",
        cache_dir: str | Path = ".cache/ddpm_lab",
        kid: bool = True,
        inception_score: bool = True,
        precision_recall: bool = True,
        bootstrap: int = 100,
        fd_dinov2: bool = False,
        dinov2_model: str = "dinov2-vit-l-14",
        seed: int = 0,
        save_samples: bool = False,
        output_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if on_missing_weights not in ("error", "skip"):
            raise ValueError(f"metrics.fid.on_missing_weights={on_missing_weights!r}; allowed values: error, skip.")
        if num_samples < 2:
            raise ValueError(
                f"metrics.fid.num_samples={num_samples} is not valid: FID needs at least 2 samples (papers use "
                "50000; 10000 is the default during training)."
            )
        for key, count in (("num_samples", num_samples), ("reference_num_images", reference_num_images)):
            if precision_recall and count is not None and count <= PRC_NEIGHBORHOOD:
                raise ValueError(
                    f"metrics.fid.{key}={count} is too few for precision/recall (k={PRC_NEIGHBORHOOD} nearest "
                    "neighbours): use more images, or metrics.fid.precision_recall=false."
                )
        if not isinstance(num_evals, int) or num_evals < 1:
            raise ValueError(
                f"metrics.fid.num_evals={num_evals!r} is not valid: use an integer >= 1 (EDM uses 3 sampling seeds)."
            )
        if reference_num_images is not None and reference_num_images < 2:
            raise ValueError(
                f"metrics.fid.reference_num_images={reference_num_images} is not valid: use null (the whole "
                "reference split) or at least 2."
            )
        self.check_every_n_steps(every_n_steps, "metrics.fid.every_n_steps")
        if batch_size < 1:
            raise ValueError("metrics.fid.batch_size must be >= 1.")
        self.every_n_steps, self.num_samples, self.num_evals = every_n_steps, num_samples, num_evals
        self.batch_size = batch_size
        self.sampling = {
            "sampler": sampler,
            "steps": steps,
            "eta": eta,
            "spacing": spacing,
            "guidance_scale": guidance_scale,
        }
        self.options = MetricOptions(kid, 1000, inception_score, precision_recall, bootstrap, seed)
        self.use_ema, self.seed = use_ema, seed
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
        # FD-DINOv2 loads its network now, so a missing hub copy stops the run at start-up
        self.dinov2 = DinoV2Features(dinov2_model) if fd_dinov2 and self.disabled_reason is None else None
        self._dinov2_reference = None
        self.best: dict[str, Any] = {"fid": math.inf, "step": None}
        self.last_protocol: dict[str, Any] | None = None

    @staticmethod
    def logged_metrics(options: Mapping[str, Any]) -> tuple[str, ...]:
        """What a callback built from ``options`` (its config node) logs: nothing when it will be off for
        missing weights (on_missing_weights=skip), else FID and what else it is asked for."""
        if options.get("on_missing_weights", "error") == "skip":
            try:
                resolve_inception_weights(options.get("inception_weights"), download=False)
            except InceptionWeightsError:
                return ()
        chosen = MetricOptions(
            kid=options.get("kid", True),
            inception_score=options.get("inception_score", True),
            precision_recall=options.get("precision_recall", True),
            bootstrap=options.get("bootstrap", 100),
        )
        dinov2 = ("fd_dinov2",) if options.get("fd_dinov2", False) else ()
        return tuple(f"val/{name}" for name in (*chosen.logged(options.get("num_evals", 1)), *dinov2))

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best.update(state_dict.get("best", {}))

    def _reference_of(self, trainer: L.Trainer, extractor):
        datamodule = trainer.datamodule
        split = self.reference_split or datamodule.reference_split
        reference = load_or_compute_reference(
            datamodule.images(split),
            datamodule.name,
            split,
            extractor,
            self.cache_dir,
            self.reference_num_images,
            progress=self.progress and trainer.global_rank == 0,
        )
        rank_zero_info(
            f"{extractor.protocol()['feature_extractor']} reference {datamodule.name}:{split}: "
            f"{'loaded from' if reference.from_cache else 'computed and cached in'} {reference.path}"
        )
        return reference

    def _ensure_reference(self, trainer: L.Trainer, device: torch.device):
        if self._extractor is None:
            self._extractor = InceptionFeatures(self.weights_path, device)
            if self.dinov2 is not None:
                self.dinov2 = DinoV2Features(self.dinov2.model, device)
        if self._reference is None:
            self._reference = self._reference_of(trainer, self._extractor)
            if self.dinov2 is not None:
                self._dinov2_reference = self._reference_of(trainer, self.dinov2)
        return self._extractor, self._reference

    def evaluation_seeds(self) -> list[int]:
        return [self.seed + e for e in range(self.num_evals)]

    @torch.no_grad()
    def generate_shard(self, trainer: L.Trainer, pl_module, seed: int | None = None) -> torch.Tensor:
        """This rank's share of the samples, as uint8 images. Image i of the set (counted over all ranks) has
        its own generator seeded by (seed, i), and class-conditional models draw labels 0, 1, ..., C-1, 0, ...
        by i: the sample set is the same on any number of ranks and at any batch size (EDM2's per-image
        seeds)."""
        seed = self.seed if seed is None else seed
        sizes = shard_sizes(self.num_samples, trainer.world_size)
        size, offset = sizes[trainer.global_rank], sum(sizes[: trainer.global_rank])
        classes = pl_module.num_classes
        chunks = []
        show = self.progress and trainer.global_rank == 0
        bar = tqdm(total=size, desc=f"FID sampling (seed {seed})", disable=not show)
        for start in range(offset, offset + size, self.batch_size):
            n = min(self.batch_size, offset + size - start)
            generators = per_sample_generators(seed, range(start, start + n), pl_module.device)
            labels = None if classes is None else balanced_labels(n, classes, pl_module.device, start=start)
            images = pl_module.generate(n, generator=generators, use_ema=self.use_ema, labels=labels, **self.sampling)
            chunks.append(to_uint8(images))
            bar.update(n)
        bar.close()
        return torch.cat(chunks) if chunks else torch.zeros(0, *pl_module.sample_shape, dtype=torch.uint8)

    def evaluate(self, trainer: L.Trainer, pl_module) -> dict[str, float] | None:
        if self.disabled_reason is not None or len(pl_module.sample_shape) != 3:
            return None
        extractor, reference = self._ensure_reference(trainer, pl_module.device)
        sizes = shard_sizes(self.num_samples, trainer.world_size)
        evaluations, step = [], trainer.global_step
        for seed in self.evaluation_seeds():
            images = self.generate_shard(trainer, pl_module, seed)
            pool, logits = extractor(images)
            pool = gather_rows(trainer, pool.float(), sizes).double()
            logits = gather_rows(trainer, logits.float(), sizes).double()
            evaluations.append(
                image_metrics(pool, logits, reference.stats, reference.kid_features, self.options, pl_module.device)
            )
            if self.dinov2 is not None:
                features = gather_rows(trainer, self.dinov2(images)[0].float(), sizes).double()
                stats = GaussianStats.from_features(features)
                evaluations[-1]["fd_dinov2"] = frechet_distance(stats, self._dinov2_reference.stats)
            if self.save_samples and self.output_dir is not None:
                self._save_samples(trainer, gather_rows(trainer, images, sizes), pool, step, seed)
        values = combine_evaluations(evaluations)
        if values["fid"] < self.best["fid"]:
            self.best = {"fid": values["fid"], "step": step}
            if "fid_ci_low" in values:
                self.best["ci95"] = [values["fid_ci_low"], values["fid_ci_high"]]
        self.last_protocol = self.protocol(trainer, pl_module, reference, len(pool), images, values, extractor)
        logged = {f"val/{k}": float(v) for k, v in values.items() if k != "kid_subset_size"}
        summary = {"val/fid_best": self.best["fid"], "val/fid_best_step": self.best["step"]}
        if "ci95" in self.best:
            summary["val/fid_best_ci95"] = self.best["ci95"]
        log_to_every_logger(trainer, logged, {**summary, "fid_protocol": self.last_protocol})
        return logged

    def _save_samples(self, trainer, images: torch.Tensor, pool: torch.Tensor, step: int, seed: int) -> None:
        if trainer.global_rank == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            suffix = f"_seed_{seed}" if self.num_evals > 1 else ""
            path = self.output_dir / f"fid_samples_step_{step:07d}{suffix}.npz"
            np.savez(path, images=images.numpy(), pool=pool.numpy())

    def protocol(self, trainer, pl_module, reference, count, images, values, extractor) -> dict[str, Any]:
        """Everything that changes the numbers, recorded with them (the leaderboard never mixes protocols)."""
        settings = resolve_sampling(pl_module.sampling, self.sampling)
        options = self.options
        return {
            "metric": "val/fid",
            "num_samples": count,
            "num_evals": self.num_evals,
            "evaluation_seeds": self.evaluation_seeds(),
            "sample_seeds": SAMPLE_SEEDS,
            "reference": f"{reference.key['dataset']}:{reference.key['split']}",
            "reference_num_images": reference.stats.count,
            "resolution": int(images.shape[-1]) if len(images) else None,
            "sampler": settings["sampler"],
            "sampler_steps": settings["steps"],
            "eta": settings["eta"],
            "spacing": settings["spacing"],
            "conditional": pl_module.num_classes is not None,
            "guidance_scale": settings["guidance_scale"] if pl_module.num_classes is not None else None,
            "nfe": pl_module.diffusion.model_evaluations(settings["sampler"], settings["steps"]),
            "weights": "ema" if self.use_ema else "raw",
            "kid_subset_size": values.get("kid_subset_size"),
            "bootstrap": f"{options.bootstrap} replicates, {BOOTSTRAP_METHOD}" if options.bootstrap else None,
            "precision_recall": (
                f"k={PRC_NEIGHBORHOOD}, against {len(reference.kid_features)} real images"
                if options.precision_recall
                else None
            ),
            "world_size": trainer.world_size,
            **extractor.protocol(),
            **({"fd_dinov2": self.dinov2.protocol()} if self.dinov2 is not None else {}),
            **({"dinov2_weights_sha256": self.dinov2.weights_sha256[:16]} if self.dinov2 is not None else {}),
        }
