"""``DiffusionModule``: a LightningModule that trains a network with a ``GaussianDiffusion`` and keeps an EMA
copy of its weights for sampling and evaluation."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from ..diffusion import GaussianDiffusion, loss_term_names, make_timestep_sampler
from ..models import EMA
from .checkpointing import gather_rng_states, restore_rng_state, seed_rank_stream
from .precision import at_run_precision

# torch.compile's modes: reduce-overhead adds CUDA graphs (fewer launches), max-autotune also benchmarks kernels.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SAMPLING_DEFAULTS = {"sampler": "ddim", "steps": 100, "eta": 0.0, "spacing": "uniform", "clip_denoised": True}
NAN_POLICIES = ("stop", "skip")
SWITCH_VALUES = (True, False, "auto")  # channels_last, fused_optimizer: on, off, or on where it pays


def _describe(terms: dict[str, Any]) -> str:
    return ", ".join(f"{name}={float(torch.as_tensor(value).float().mean()):.4g}" for name, value in terms.items())


class DiffusionModule(L.LightningModule):
    """Args:
    network: ``network(x_t, t)`` with ``in_channels``/``out_channels`` attributes (UNet, MLPDenoiser).
    diffusion: the process, parameterisation, variance and loss.
    optimizer: a partial optimiser, called with the network's parameters (Hydra ``_partial_: true``).
    sample_shape: shape of one data point, e.g. (3, 32, 32) or (2,).
    lr_warmup_steps: linear learning-rate warm-up (DDPM: 5000).
    ema_decay, ema_warmup: weight EMA (DDPM: 0.9999).
    timestep_sampler: "uniform" or "loss_aware" (IDDPM importance sampling; needs a loss with a vlb term).
    sampling: default sampler settings for pictures and metrics (sampler, steps, eta, spacing, clip_denoised).
    run_config: the run's full config as YAML, stored in checkpoints so that they can be rebuilt.
    """

    def __init__(
        self,
        network: nn.Module,
        diffusion: GaussianDiffusion,
        optimizer: Callable[..., torch.optim.Optimizer],
        sample_shape: tuple[int, ...],
        lr_warmup_steps: int = 0,
        ema_decay: float = 0.9999,
        ema_warmup: bool = True,
        timestep_sampler: str = "uniform",
        sampling: dict[str, Any] | None = None,
        run_config: str | None = None,
        nan_policy: str = "stop",
        max_consecutive_nonfinite: int = 10,
        channels_last: bool | str = "auto",
        compile_network: bool = False,
        compile_mode: str = "default",
        fused_optimizer: bool | str = "auto",
    ) -> None:
        super().__init__()
        diffusion.check_model_channels(network.out_channels, network.in_channels)
        if timestep_sampler == "loss_aware" and diffusion.loss_type not in ("kl", "hybrid"):
            raise ValueError(
                "timestep_sampler=loss_aware weights timesteps by their vlb term, which loss="
                f"{diffusion.loss_type} does not compute; use loss=hybrid or loss=kl, or timestep_sampler=uniform."
            )
        self.network = network
        self.ema = EMA(network, ema_decay, ema_warmup)
        self.diffusion = diffusion
        self.optimizer_factory = optimizer
        self.sample_shape = tuple(sample_shape)
        self.lr_warmup_steps = lr_warmup_steps
        self.timestep_sampler = make_timestep_sampler(timestep_sampler, diffusion.num_timesteps)
        self.sampling = {**SAMPLING_DEFAULTS, **(sampling or {})}
        self.run_config = run_config
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"module.nan_policy={nan_policy!r}; allowed values: {', '.join(NAN_POLICIES)}.")
        self.nan_policy = nan_policy
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.nonfinite_in_a_row = 0
        self.nonfinite_skipped = 0
        # stop policy: the first non-finite step and its loss terms, kept on the device (no per-step sync)
        self.register_buffer("first_nonfinite_step", torch.tensor(-1, dtype=torch.long), persistent=False)
        self._nonfinite_terms: dict[str, torch.Tensor] = {}
        self._pending_rng: dict[str, Any] | None = None
        # Validation means of each loss term (exact under DDP: torchmetrics reduces sums and counts).
        self.val_means = nn.ModuleDict(
            {name: MeanMetric(nan_strategy="disable") for name in loss_term_names(diffusion.loss_type)}
        )
        self._reseed_after_restore = False
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"module.compile_mode={compile_mode!r}; allowed values: {', '.join(COMPILE_MODES)}.")
        for name, value in (("channels_last", channels_last), ("fused_optimizer", fused_optimizer)):
            if value not in SWITCH_VALUES or (isinstance(value, int) and not isinstance(value, bool)):
                raise ValueError(f"module.{name}={value!r}; allowed values: true, false, auto.")
        if not isinstance(compile_network, bool):
            raise ValueError(f"module.compile_network={compile_network!r}; allowed values: true, false.")
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

    def _compiled(self, network: nn.Module, purpose: str) -> Callable:
        """``torch.compile(network)`` with an eager fallback (and one message saying why) where it fails."""
        try:
            compiled = torch.compile(network, mode=self.compile_mode)
        except Exception as err:  # e.g. an unsupported platform or Python version
            rank_zero_warn(
                f"module.compile_network=true but torch.compile is not available here ({err}); {purpose} runs eagerly."
            )
            return network
        return _EagerFallback(compiled, network, purpose)

    def _sampling_network(self, network: nn.Module) -> Callable:
        """``network``, compiled (once, lazily) when module.compile_network is on: sampling for FID runs the
        network thousands of times, so its inference graph is worth compiling too."""
        if not self.compile_network:
            return network
        if id(network) not in self._compiled_samplers:
            self._compiled_samplers[id(network)] = self._compiled(network, "sampling")
        return self._compiled_samplers[id(network)]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.network(x_t, t)

    def _losses(self, network: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None):
        return self.diffusion.training_losses(network, x0, t, noise)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self._fast(self.channels_last) and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        t, weights = self.timestep_sampler.sample(batch.shape[0], device=self.device)
        terms = self._losses(self._train_network, batch, t)
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

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.nan_policy == "stop" and self.global_step % max(self.trainer.log_every_n_steps, 1) == 0:
            self.check_finite()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """batch: x (B, ...) and each item's index in the split (B,), from the sharded eval loader."""
        x, index = batch
        # Fixed timestep and noise per item, drawn from its index: validation losses are comparable across
        # evaluations and do not depend on how many ranks the split is sharded over.
        t, noise = [], []
        for item in index.tolist():
            generator = torch.Generator().manual_seed(int(item))
            t.append(torch.randint(0, self.diffusion.num_timesteps, (1,), generator=generator))
            noise.append(torch.randn(x.shape[1:], generator=generator))
        t, noise = torch.cat(t).to(self.device), torch.stack(noise).to(self.device, x.dtype)
        terms = self._losses(self.ema.module, x, t, noise)
        for name, value in terms.items():
            # Per-item sums and counts, reduced over ranks at the epoch's end: the exact mean over every item.
            self.val_means[name].update(value.detach())
            self.log(f"val/{name}", self.val_means[name], prog_bar=name == "loss")

    def fused_optimizer_kwargs(self) -> dict[str, bool]:
        """``fused=True`` for the optimizer where it is asked for (or ``auto``) and the optimizer takes it.

        PyTorch's fused Adam/AdamW/SGD kernels (CUDA, and CPU since torch 2.4) do the whole update in one pass
        over each parameter instead of about ten foreach passes: 6 ms instead of 22 ms per step for 9M
        parameters on a 2-core CPU (docs/benchmarks.md).
        """
        if self.fused_optimizer is False:
            return {}
        factory = self.optimizer_factory
        optimizer_class = getattr(factory, "func", factory)
        if not optimizer_takes_fused(optimizer_class):
            if self.fused_optimizer is True:
                raise ValueError(
                    f"module.fused_optimizer=true but {getattr(optimizer_class, '__name__', optimizer_class)} has "
                    "no fused implementation; use module.fused_optimizer=auto or false, or optimizer=adamw."
                )
            return {}
        if self.device.type not in ("cuda", "cpu"):
            return {}
        trainer = self._trainer
        if trainer is not None and str(trainer.precision) in ("16-mixed", "16") and trainer.gradient_clip_val:
            # Lightning cannot clip the fp16 gradients that a fused step unscales itself.
            if self.fused_optimizer is True:
                raise ValueError(
                    "module.fused_optimizer=true cannot be combined with trainer.precision=16-mixed and gradient "
                    "clipping; use module.fused_optimizer=auto, trainer.precision=bf16-mixed or "
                    "trainer.gradient_clip_val=null."
                )
            return {}
        return {"fused": True}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        # Lightning's mixed-precision plugin refuses to clip for any optimizer whose step could unscale gradients
        # itself (fused Adam/AdamW), even under bf16-mixed, where there is no grad scaler and nothing to unscale.
        # Without a scaler the gradients are the true ones, so clip them here as Lightning would.
        no_scaler = getattr(self.trainer.precision_plugin, "scaler", None) is None
        if gradient_clip_val and no_scaler and getattr(optimizer, "_step_supports_amp_scaling", False):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.network.parameters(), **self.fused_optimizer_kwargs())
        warmup = max(self.lr_warmup_steps, 0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @torch.no_grad()
    def generate(
        self,
        num_samples: int,
        generator: torch.Generator | None = None,
        use_ema: bool = True,
        progress: bool = False,
        return_trajectory: bool = False,
        **overrides: Any,
    ):
        """Samples (num_samples, *sample_shape) with the module's sampling settings (``overrides`` win)."""
        settings = {**self.sampling, **{k: v for k, v in overrides.items() if v is not None}}
        network = self.ema.module if use_ema else self.network
        was_training = network.training
        network.eval()
        try:
            return self.diffusion.sample(
                at_run_precision(self._sampling_network(network), self._trainer),
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


def optimizer_takes_fused(optimizer_class: Callable) -> bool:
    """Whether a torch.optim class has a fused implementation (Adam, AdamW, SGD, Adagrad: a ``fused`` argument)."""
    try:
        return "fused" in inspect.signature(optimizer_class).parameters
    except (TypeError, ValueError):  # no signature to read: treat as not fused
        return False


class _EagerFallback:
    """Calls a compiled network; if compilation fails (lazily, at the first call), says why once and runs eagerly.

    An error of the network itself is raised again by the eager call, so it is not hidden.
    """

    def __init__(self, compiled: Callable, network: nn.Module, purpose: str) -> None:
        self.compiled, self.network, self.purpose = compiled, network, purpose

    def __call__(self, *args: Any) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as err:
                rank_zero_warn(
                    f"torch.compile of the network failed ({type(err).__name__}: {err}); {self.purpose} continues "
                    "without compilation (module.compile_network=false to silence)."
                )
                self.compiled = None
        return self.network(*args)
