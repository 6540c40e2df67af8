"""The module's fast paths, each optional and each with a fallback: torch.compile of the network (eager where
compilation fails), PyTorch's fused optimizer kernels, and gradient clipping that still works with them.
Figures: docs/benchmarks.md."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

# torch.compile's modes: reduce-overhead adds CUDA graphs (fewer launches), max-autotune also benchmarks kernels.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SWITCH_VALUES = (True, False, "auto")  # channels_last, fused_optimizer: on, off, or on where it pays


def fused_optimizer_conflict(
    optimizer_class: type, name: str, precision: object, gradient_clip_val: object
) -> str | None:
    """Why ``module.fused_optimizer=true`` cannot hold with this optimizer (``name``: as the config names it),
    precision and clipping; None when it can. Start-up validation and the module both ask this."""
    if not optimizer_takes_fused(optimizer_class):
        return (
            f"module.fused_optimizer=true but optimizer {name} has no fused implementation (torch has fused Adam, "
            "AdamW, SGD and Adagrad). Use module.fused_optimizer=auto (fused where available) or false."
        )
    if str(precision) in ("16-mixed", "16") and gradient_clip_val:
        # Lightning cannot clip the gradients of an optimizer that unscales them inside its fused step.
        return (
            "module.fused_optimizer=true cannot be combined with trainer.precision=16-mixed and "
            f"trainer.gradient_clip_val={gradient_clip_val}: the fused step unscales the fp16 gradients itself, so "
            "they cannot be clipped before it. Use module.fused_optimizer=auto (falls back to the foreach optimizer "
            "here), trainer.precision=bf16-mixed, or trainer.gradient_clip_val=null."
        )
    return None


class FastPathsMixin:
    """For ``DiffusionModule``: reads ``compile_network``, ``compile_mode``, ``fused_optimizer``,
    ``optimizer_factory`` and ``_compiled_samplers`` from the module."""

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
        trainer = self._trainer
        precision, clip = (trainer.precision, trainer.gradient_clip_val) if trainer is not None else (None, None)
        name = getattr(optimizer_class, "__name__", str(optimizer_class))
        conflict = fused_optimizer_conflict(optimizer_class, name, precision, clip)
        if conflict is not None:
            if self.fused_optimizer is True:
                raise ValueError(conflict)
            return {}  # auto: the foreach optimizer here
        if self.device.type not in ("cuda", "cpu"):
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
