"""``DiffusionModule``: a LightningModule that trains a network with a ``GaussianDiffusion`` and keeps an EMA
copy of its weights for sampling and evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from ..checks import is_int, is_number
from ..diffusion import GaussianDiffusion, loss_term_names, resolve_sampling
from ..diffusion.guidance import balanced_labels, drop_labels, guided_model
from ..models import EMA
from .checkpointing import gather_rng_states, restore_rng_state, seed_rank_stream
from .conditioning import split_batch, with_labels
from .fast_paths import COMPILE_MODES, SWITCH_VALUES, FastPathsMixin
from .lr_schedule import build_lr_scheduler, check_lr_schedule
from .nan_policy import NonFiniteLossPolicy
from .precision import at_run_precision

SAMPLING_DEFAULTS = {
    "sampler": "ddim",
    "steps": 100,
    "eta": None,  # the sampler's own (diffusion.DEFAULT_ETA)
    "spacing": "uniform",
    "clip_denoised": True,
    "guidance_scale": 1.0,
}


class DiffusionModule(NonFiniteLossPolicy, FastPathsMixin, L.LightningModule):
    """Args:
    network: ``network(x_t, t)`` (the contract in ``ddpm_lab.cli.contracts``); a class-conditional one
        (``num_classes`` set) is ``network(x_t, t, y)`` and trains on (x, y) batches. With ``in_channels`` and
        ``out_channels`` attributes (UNet, MLPDenoiser) they are checked against the variance type here.
    diffusion: the process and its loss: a ``GaussianDiffusion`` (DDPM: parameterisation, variance, loss), an
        ``EDMProcess`` or a ``FlowMatchingProcess`` (``diffusion.objectives``).
    optimizer: a partial optimiser, called with the network's parameters (Hydra ``_partial_: true``).
    sample_shape: shape of one data point, e.g. (3, 32, 32) or (2,).
    lr_warmup_steps: linear learning-rate warm-up (DDPM: 5000); lr_schedule: after it, ``constant`` (DDPM),
        ``cosine`` or ``linear`` decay to ``lr_min_ratio`` x the rate at the last step.
    ema_decay, ema_warmup: weight EMA (DDPM: 0.9999).
    timestep_sampler: "uniform" or "loss_aware" (IDDPM importance sampling; needs a loss with a vlb term).
    sampling: default sampler settings for pictures and metrics (sampler, steps, eta, spacing, clip_denoised).
    run_config: the run's full config as YAML, stored in checkpoints so that they can be rebuilt.
    p_uncond: label dropout of a class-conditional network (classifier-free guidance; Ho & Salimans: 0.1-0.2).
    """

    def __init__(
        self,
        network: nn.Module,
        diffusion: GaussianDiffusion,
        optimizer: Callable[..., torch.optim.Optimizer],
        sample_shape: tuple[int, ...],
        lr_warmup_steps: int = 5000,
        lr_schedule: str = "constant",
        lr_min_ratio: float = 0.0,
        ema_decay: float = 0.9999,
        ema_warmup: bool = True,
        timestep_sampler: str = "uniform",
        sampling: dict[str, Any] | None = None,
        run_config: str | None = None,
        nan_policy: str = "stop",
        max_consecutive_nonfinite: int = 10,
        channels_last: bool | str = True,
        compile_network: bool = False,
        compile_mode: str = "default",
        fused_optimizer: bool | str = "auto",
        p_uncond: float = 0.1,
    ) -> None:
        super().__init__()
        if not is_number(p_uncond) or not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"module.p_uncond={p_uncond!r} is not valid: use a probability in [0, 1) (0.1 is usual).")
        self.num_classes: int | None = getattr(network, "num_classes", None)
        self.p_uncond = float(p_uncond)
        if hasattr(network, "out_channels") and hasattr(network, "in_channels"):  # ours; the builders check any
            diffusion.check_model_channels(network.out_channels, network.in_channels)  # network by a forward pass
        self.network = network
        self.ema = EMA(network, ema_decay, ema_warmup)
        self.diffusion = diffusion
        self.optimizer_factory = optimizer
        self.sample_shape = tuple(sample_shape)
        check_lr_schedule(lr_schedule, lr_warmup_steps, lr_min_ratio)
        self.lr_warmup_steps, self.lr_schedule, self.lr_min_ratio = lr_warmup_steps, lr_schedule, lr_min_ratio
        try:
            self.timestep_sampler = diffusion.make_timestep_sampler(timestep_sampler)
        except ValueError as err:  # the sampler's own rule, with the config key that set it
            raise ValueError(f"module.timestep_sampler={timestep_sampler!r}: {err}") from None
        if timestep_sampler == "loss_aware" and diffusion.loss_type not in ("kl", "hybrid"):
            raise ValueError(
                "timestep_sampler=loss_aware weights timesteps by their vlb term, which loss="
                f"{diffusion.loss_type} does not compute; use loss=hybrid or loss=kl, or timestep_sampler=uniform."
            )
        self.sampling = {**SAMPLING_DEFAULTS, **(sampling or {})}
        self.run_config = run_config
        self.init_nan_policy(nan_policy, max_consecutive_nonfinite)
        self._pending_rng: dict[str, Any] | None = None
        # Validation means of each loss term (exact under DDP: torchmetrics reduces sums and counts).
        self.val_means = nn.ModuleDict(
            {name: MeanMetric(nan_strategy="disable") for name in loss_term_names(diffusion.loss_type)}
        )
        self._reseed_after_restore = False
        if compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"module.compile_mode={compile_mode!r} is not valid; allowed values: {', '.join(COMPILE_MODES)}."
            )
        for name, value in (("channels_last", channels_last), ("fused_optimizer", fused_optimizer)):
            if value not in SWITCH_VALUES or is_int(value):
                raise ValueError(f"module.{name}={value!r} is not valid; allowed values: true, false, auto.")
        if not isinstance(compile_network, bool):
            raise ValueError(f"module.compile_network={compile_network!r} is not valid; allowed values: true, false.")
        self.channels_last, self.compile_network, self.fused_optimizer = channels_last, compile_network, fused_optimizer
        self.compile_mode = compile_mode
        self._compiled_samplers: dict[int, Callable] = {}
        self._set_train_network(network)

    def _fast(self, option: bool | str) -> bool:
        """``auto`` switches a fast path on where it pays: on CUDA devices."""
        return self.device.type == "cuda" if option == "auto" else bool(option)

    def setup(self, stage: str) -> None:
        if self._fast(self.channels_last) and len(self.sample_shape) == 3:
            self.network.to(memory_format=torch.channels_last)
            self.ema.module.to(memory_format=torch.channels_last)
        self._set_train_network(self._compiled(self.network, "training") if self.compile_network else self.network)

    def _set_train_network(self, network: Callable) -> None:
        """What training_step calls: the network, or its compiled wrapper. Kept out of nn.Module's registry so
        the network's weights appear once in the state dict (under ``network.``)."""
        object.__setattr__(self, "_train_network", network)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.network(x_t, t)

    def _losses(self, network: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None):
        return self.diffusion.training_losses(network, x0, t, noise)

    def training_step(self, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        batch, labels = split_batch(batch, self.num_classes)
        if self._fast(self.channels_last) and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        t, weights = self.timestep_sampler.sample(batch.shape[0], device=self.device)
        if labels is not None:
            labels = drop_labels(labels, self.p_uncond, null_label=self.num_classes)
        terms = self._losses(with_labels(self._train_network, labels), batch, t)
        loss = (terms["loss"] * weights).mean()
        if self.nan_policy == "skip" and not self._step_is_finite(loss, terms):
            return None  # Lightning then skips backward and the optimizer step
        if self.nan_policy == "stop":
            self._record_nonfinite(loss, terms)
        if "vlb" in terms and self.timestep_sampler.adaptive:
            # Every rank updates its history with the whole global batch, so all ranks sample alike.
            all_t, all_vlb = self.all_gather(t), self.all_gather(terms["vlb"].detach())
            self.timestep_sampler.update(all_t.reshape(-1), all_vlb.reshape(-1))
        self.log("train/loss", loss, prog_bar=True)
        for name, value in terms.items():
            if name != "loss":
                self.log(f"train/{name}", value.mean())
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Inside the step (not in on_train_batch_end, which runs after checkpoint callbacks), so a checkpoint
        # taken after step N holds the EMA of step N.
        self.ema.update(self.network)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._pending_rng is not None:  # resuming: replay the random stream from where it was saved
            restore_rng_state(self._pending_rng)
            if self._reseed_after_restore:
                seed_rank_stream(self.trainer.global_rank)
            self._pending_rng = None

    def validation_step(self, batch: tuple[Any, torch.Tensor], batch_idx: int) -> None:
        """batch: x (B, ...) (or (x, labels) for a conditional model) and each item's index in the split (B,),
        from the sharded eval loader."""
        items, index = batch
        x, labels = split_batch(items, self.num_classes)
        # Fixed timestep and noise per item, drawn from its index: validation losses are comparable across
        # evaluations and do not depend on how many ranks the split is sharded over.
        t, noise = [], []
        for item in index.tolist():
            generator = torch.Generator().manual_seed(int(item))
            t.append(self.timestep_sampler.validation_time(generator))
            noise.append(torch.randn(x.shape[1:], generator=generator))
        t, noise = torch.cat(t).to(self.device), torch.stack(noise).to(self.device, x.dtype)
        terms = self._losses(with_labels(self.ema.module, labels), x, t, noise)
        for name, value in terms.items():
            # Per-item sums and counts, reduced over ranks at the epoch's end: the exact mean over every item.
            self.val_means[name].update(value.detach())
            self.log(f"val/{name}", self.val_means[name], prog_bar=name == "loss")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.network.parameters(), **self.fused_optimizer_kwargs())
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else float("inf")
        scheduler = build_lr_scheduler(optimizer, self.lr_warmup_steps, total, self.lr_schedule, self.lr_min_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @torch.no_grad()
    def generate(
        self,
        num_samples: int,
        generator: torch.Generator | None = None,
        use_ema: bool = True,
        progress: bool = False,
        return_trajectory: bool = False,
        labels: torch.Tensor | None = None,
        **overrides: Any,
    ):
        """Samples (num_samples, *sample_shape) with the module's sampling settings (``overrides`` win). A
        class-conditional model draws ``labels`` (default: every class equally often, 0, 1, ..., C-1, 0, ...)
        under classifier-free guidance ``guidance_scale``."""
        settings = resolve_sampling(self.sampling, overrides)
        network = self.ema.module if use_ema else self.network
        was_training = network.training
        network.eval()
        model = at_run_precision(self._sampling_network(network), self._trainer)
        if self.num_classes is not None:
            labels = balanced_labels(num_samples, self.num_classes, self.device) if labels is None else labels
            mean_channels = self.sample_shape[0] if self.diffusion.learned_variance else None
            model = guided_model(
                model, labels.to(self.device), settings["guidance_scale"], self.num_classes, mean_channels
            )
        elif settings["guidance_scale"] != 1.0 or labels is not None:
            raise ValueError(
                f"guidance_scale={settings['guidance_scale']} and class labels need a class-conditional model "
                "(train with conditioning=class); this one is unconditional."
            )
        try:
            return self.diffusion.sample(
                model,
                (num_samples, *self.sample_shape),
                sampler=settings["sampler"],
                steps=settings["steps"],
                eta=settings["eta"],
                spacing=settings["spacing"],
                clip_denoised=settings["clip_denoised"] and len(self.sample_shape) == 3,
                generator=generator,
                progress=progress,
                return_trajectory=return_trajectory,
                device=self.device,
            )
        finally:
            network.train(was_training)

    def on_fit_start(self) -> None:
        seed_rank_stream(self.trainer.global_rank)  # a resume then restores each rank's own saved state

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.nan_policy == "stop":
            self.check_finite()  # never overwrite a good checkpoint with NaN weights
        rng = gather_rng_states()  # every rank calls this hook; rank 0 writes every rank's stream
        checkpoint["ddpm_lab"] = {
            "config": self.run_config,
            "timestep_sampler": self.timestep_sampler.state_dict(),
            "rng": rng[0],
            "rng_per_rank": rng,
            "nonfinite_skipped": self.nonfinite_skipped,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ddpm_lab", {})
        if state.get("timestep_sampler"):
            self.timestep_sampler.load_state_dict(state["timestep_sampler"])
        per_rank = state.get("rng_per_rank") or []
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer is not None else (0, 1)
        # Each rank resumes its own stream; after a change of world size, rank 0's, re-derived per rank.
        self._pending_rng = per_rank[rank] if len(per_rank) == world else state.get("rng")
        self._reseed_after_restore = len(per_rank) != world
        self.nonfinite_skipped = state.get("nonfinite_skipped", 0)
