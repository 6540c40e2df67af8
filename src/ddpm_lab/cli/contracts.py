"""What ddpm-lab asks of a network and a DataModule given by ``_target_`` (ours or a user project's), checked
at start-up with a message naming what is missing. README's "Your own project" states the same contract.

Network: built as ``Net(sample_shape=[C, H, W] or [D], learned_variance=bool, **its config keys)``, plus
``num_classes=int`` when the run is class-conditional; called as ``net(x_t (B, *sample_shape), t (B,) long)``,
or ``net(x_t, t, y (B,) long)`` when conditional, and returns ``(B, C_out, *sample_shape[1:])`` with
``C_out = 2 C`` (mean and variance halves) when ``learned_variance`` else ``C``.

DataModule: a LightningDataModule with ``sample_shape`` (a tuple of ints, known from its constructor),
``train_dataloader`` and ``val_dataloader`` yielding float tensors ``(B, *sample_shape)`` (images in [-1, 1]),
or ``(x, y)`` pairs when conditional; ``kind`` is ``"image"`` (the default) or ``"points"``; and what each
configured callback reads of it (``datamodule_needs`` of the callback class, e.g. FID: ``images(split)``,
``reference_split`` and ``name``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence

from .errors import ConfigError

README_SECTION = 'README, "Your own project"'


def network_arguments(conditional: bool) -> tuple[str, ...]:
    """The keyword arguments ddpm-lab passes to every network's constructor."""
    return ("sample_shape", "learned_variance", *(("num_classes",) if conditional else ()))


def check_network_class(network_cls: type, conditional: bool) -> None:
    """The constructor takes every argument ddpm-lab passes (or ``**kwargs``)."""
    parameters = inspect.signature(network_cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    missing = [name for name in network_arguments(conditional) if name not in parameters]
    if missing:
        name = f"{network_cls.__module__}.{network_cls.__qualname__}"
        why = " (this run is class-conditional: conditioning=class)" if "num_classes" in missing else ""
        raise ConfigError(
            f"model={name} cannot be built by ddpm-lab: its constructor has no {', '.join(missing)} argument"
            f"{why}. ddpm-lab builds every network as Net(sample_shape=[C, H, W] or [D], learned_variance=bool"
            f"{', num_classes=int' if conditional else ''}, **model config keys): add the missing arguments "
            f"to {network_cls.__name__}.__init__ ({README_SECTION})."
        )


def check_network_output(network, sample_shape: Sequence[int], diffusion, conditional: bool) -> None:
    """One forward pass of a batch of 2 on the network's device (the meta device at start-up: shapes only)
    returns ``(2, C_out, *sample_shape[1:])``, C_out as ``diffusion.model_output_channels`` says."""
    import torch

    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    x = torch.zeros(2, *sample_shape, device=device)
    t = torch.zeros(2, dtype=torch.long, device=device)
    args = (x, t, torch.zeros(2, dtype=torch.long, device=device)) if conditional else (x, t)
    name = type(network).__name__
    call = f"{name}(x_t, t{', y' if conditional else ''})"
    try:
        out = network(*args)
    except Exception as err:  # any failure here is the network's, reported with the call it could not take
        raise ConfigError(
            f"model={name}: {call} with x_t of shape {tuple(x.shape)} and t of shape (2,) failed: "
            f"{type(err).__name__}: {err} ({README_SECTION})."
        ) from err
    expected = (2, diffusion.model_output_channels(sample_shape[0]), *sample_shape[1:])
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        halves = " (mean and variance halves: the variance is learned)" if diffusion.learned_variance else ""
        raise ConfigError(
            f"model={name}: {call} must return a tensor of shape {expected}{halves} for data of shape "
            f"{tuple(sample_shape)}, but returned {got} ({README_SECTION})."
        )


def callback_nodes(cfg) -> list:
    """The config nodes of the callbacks a run builds: the callbacks group and the metrics group's FID and NLL
    (those not null and with a ``_target_``)."""
    metrics = cfg.get("metrics") or {}
    nodes = [*(cfg.get("callbacks") or {}).values(), metrics.get("fid"), metrics.get("nll")]
    return [node for node in nodes if node is not None and "_target_" in node]


def check_datamodule(datamodule, callback_classes: Iterable[type]) -> None:
    """The DataModule has what training and every configured callback read of it."""
    import lightning as L

    name = type(datamodule).__name__
    missing = []
    shape = getattr(datamodule, "sample_shape", None)
    if not (isinstance(shape, tuple | list) and shape and all(isinstance(s, int) and s > 0 for s in shape)):
        missing.append(f"sample_shape (a tuple of positive ints, e.g. (3, 32, 32) or (2,); got {shape!r})")
    for hook in ("train_dataloader", "val_dataloader"):
        implementation = getattr(type(datamodule), hook, None)
        if implementation is None or implementation is getattr(L.LightningDataModule, hook):
            missing.append(f"{hook}()")
    kind = getattr(datamodule, "kind", "image")
    if kind not in ("image", "points"):
        missing.append(f'kind = "image" or "points" (got {kind!r})')
    for cls in callback_classes:
        for attribute in getattr(cls, "datamodule_needs", {}).get(kind, ()):
            if not hasattr(datamodule, attribute):
                missing.append(f"{attribute} (read by {cls.__name__})")
    if missing:
        raise ConfigError(
            f"data={name} lacks what ddpm-lab reads of a DataModule: {'; '.join(missing)}. Subclass "
            "ddpm_lab.data.ImageDataModule (implement load_split) or ddpm_lab.data.PointsDataModule (implement "
            f"draw), or add these ({README_SECTION})."
        )
