"""Config validation at start-up: before any data is loaded or network built, each error names the key, the
bad value and the allowed values."""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..checks import is_int, is_number
from ..diffusion import SAMPLERS, SPACINGS
from ..diffusion.choices import ChoiceError
from .contracts import callback_nodes, check_network_output
from .errors import ConfigError

__all__ = ["ConfigError"]  # re-exported: ``from ddpm_lab.cli.validation import ConfigError`` keeps working


def constructor_error(err: BaseException) -> BaseException:
    """The error a constructor raised, out of Hydra's InstantiationException wrapper (itself if unwrapped)."""
    return err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err


def _choice(key: str, value, allowed, group: str | None = None) -> None:
    if value not in allowed:
        how = f" (command line: {group}=NAME)" if group else ""
        raise ConfigError(f"{key}={value!r} is not valid; allowed values: {', '.join(map(str, allowed))}{how}.")


# Nodes that hold user entries of their own: callbacks and loggers to add, Hydra's settings.
OPEN_NODES = ("callbacks", "logger", "hydra")


def added_keys() -> list[str]:
    """The keys this command line adds with ``+key=value`` (not config groups such as ``+ablation=schedule``)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    hydra_cfg = HydraConfig.get()
    groups = set(hydra_cfg.runtime.choices)
    added = [o[1:].split("=", 1)[0] for o in hydra_cfg.overrides.task if o.startswith("+") and not o.startswith("++")]
    return [key for key in added if key not in groups and "@" not in key]


def validate_added_keys(cfg: DictConfig) -> None:
    """A ``+key=value`` that nothing reads is refused, naming the closest known key: a key under a node with a
    ``_target_`` goes to that constructor (which judges it), one under callbacks/logger/hydra adds an entry;
    anywhere else (the top level, ``sampling``, ``paths``, ...) ddpm-lab reads only the keys its configs have."""
    import difflib

    for key in added_keys():
        parts = key.split(".")
        if parts[0] in OPEN_NODES:
            continue
        parents = [".".join(parts[:i]) for i in range(1, len(parts))]
        if any(isinstance(node := OmegaConf.select(cfg, p), DictConfig) and "_target_" in node for p in parents):
            continue
        parent = OmegaConf.select(cfg, parents[-1]) if parents else cfg
        known = [k for k in parent if f"{parents[-1] + '.' if parents else ''}{k}" != key] if parent else []
        close = difflib.get_close_matches(parts[-1], [str(k) for k in known], n=1)
        where = f"{parents[-1]}." if parents else ""
        hint = f" Did you mean {where}{close[0]}?" if close else f" Known keys there: {', '.join(map(str, known))}."
        raise ConfigError(
            f"+{key} adds a key that nothing reads, so it would be silently ignored.{hint} Set an existing key "
            "without the + (e.g. sampling.steps=50), or add a config group with +GROUP=NAME."
        )


def validate_command_line(cfg: DictConfig) -> None:
    """What the command line adds: ``+key=value`` keys and ``--config-dir`` configs (every app, first)."""
    from .config_dirs import validate_user_config_dirs

    validate_user_config_dirs()
    validate_added_keys(cfg)


# The config group that sets each choice of the diffusion node (the allowed values: the constructors' own).
DIFFUSION_GROUPS = {
    "schedule": "schedule",
    "var_type": "variance",
    "loss_type": "loss",
    "mean_type": "parameterization",
    "loss_weighting": "loss_weighting",
}


def validate_config(cfg: DictConfig) -> None:
    validate_command_line(cfg)
    diffusion = validate_objective_settings(cfg)
    validate_sampling(cfg.sampling, "sampling", diffusion, groups=True)
    validate_fast_paths(cfg)
    validate_loggers(cfg)
    validate_model_for_data(cfg, validate_data(cfg))
    validate_training_loop(cfg)
    fid = (cfg.get("metrics") or {}).get("fid")
    if fid is not None:
        validate_sampling(fid, "metrics.fid", diffusion)
    validate_fid_options(fid)
    validate_callbacks(cfg)
    validate_objective(cfg)


# The groups that set the DDPM chain (the ``diffusion`` node), which a continuous-time objective does not read.
DDPM_GROUPS = ("schedule", "variance", "loss", "loss_weighting", "parameterization")


def validate_objective_settings(cfg: DictConfig):
    """Build the objective (``process`` group) as training will: its constructor holds its rules (choices,
    T >= 2, variance x loss, ZTSNR x eps, EDM's sigma range, ...), and ``build_diffusion`` refuses DDPM settings
    a continuous-time objective cannot honour. DDPM groups or ``diffusion.*`` keys given on the command line
    with edm/flow_matching are refused too: they would change nothing. Returns the built objective."""
    from .builders import build_diffusion, is_ddpm
    from .run_identity import task_overrides

    d = cfg.diffusion
    try:
        diffusion = build_diffusion(cfg)
    except (ValueError, TypeError, InstantiationException) as err:
        cause = constructor_error(err)
        if isinstance(cause, ChoiceError):  # named with its config key and the group that sets it
            group = DIFFUSION_GROUPS.get(cause.key) if is_ddpm(cfg) else None
            node = "diffusion" if is_ddpm(cfg) else "process"
            raise ConfigError(
                f"{node}.{cause.key}={cause.value!r} is not valid; allowed values: "
                f"{', '.join(map(str, cause.allowed))}{f' (command line: {group}=NAME)' if group else ''}."
            ) from err
        if not is_ddpm(cfg):
            raise ConfigError(f"process={cfg.process._target_.rsplit('.', 1)[-1]}: {cause}") from err
        raise ConfigError(
            f"{cause} (variance={d.var_type}, loss={d.loss_type}, parameterization={d.mean_type}, "
            f"loss_weighting={d.get('loss_weighting', 'none')}, zero_terminal_snr={d.get('zero_terminal_snr', False)})"
        ) from err
    unused = [
        o
        for o in task_overrides(leave_out=())
        if o.split("=", 1)[0].lstrip("+~") in DDPM_GROUPS or o.lstrip("+~").startswith("diffusion.")
    ]
    if unused and not is_ddpm(cfg):
        raise ConfigError(
            f"process={diffusion.objective} does not read the DDPM chain's settings, so {', '.join(unused)} would "
            f"change nothing. Drop them, or use process=ddpm. The objective's own settings are under process. "
            f"(e.g. process.p_mean=-1.0 for edm, process.time_sampling=uniform for flow_matching)."
        )
    return diffusion


def validate_sampling(node, prefix: str, diffusion=None, groups: bool = False) -> None:
    """sampler, steps, eta and spacing of a sampling block (``sampling``, ``metrics.fid``) for the objective
    ``diffusion`` (its samplers; DDPM's T bounds steps; a continuous-time one needs steps and has no eta); null
    keeps the run's own setting where the block allows it."""
    samplers = diffusion.samplers if diffusion is not None else SAMPLERS
    objective = getattr(diffusion, "objective", "ddpm")
    if node.get("sampler") is not None:
        how = " (command line: sampler=NAME)" if groups else ""
        if node.sampler not in samplers:
            which = "" if objective == "ddpm" else f" for process={objective}"
            raise ConfigError(
                f"{prefix}.sampler={node.sampler!r} is not valid{which}; allowed values: {', '.join(samplers)}{how}."
            )
    if node.get("spacing") is not None:
        _choice(f"{prefix}.spacing", node.spacing, SPACINGS)
    steps, top = node.get("steps"), getattr(diffusion, "num_timesteps", None)
    continuous = diffusion is not None and top is None
    if steps is None and continuous and "steps" in node:
        raise ConfigError(
            f"{prefix}.steps=null means all T steps of the DDPM chain, but process={objective} is continuous in "
            f"time: give a number of steps (e.g. {prefix}.steps=18)."
        )
    if steps is not None and not (is_int(steps) and 1 <= steps <= (top or steps)):
        bound = f"an integer in [1, {top}]" if top else "an integer >= 1"
        raise ConfigError(f"{prefix}.steps={steps!r} is not valid: use null (all steps) or {bound}.")
    scale = node.get("guidance_scale")
    if scale is not None and not (is_number(scale) and scale >= 0):
        raise ConfigError(
            f"{prefix}.guidance_scale={scale!r} is not valid: use a number >= 0 (1 = the conditional model, "
            "0 = unconditional, > 1 guided)."
        )
    eta = node.get("eta")
    if eta is not None and not (is_number(eta) and eta >= 0):
        raise ConfigError(
            f"{prefix}.eta={eta!r} is not valid: use a number >= 0 (0 = deterministic; 1 = DDPM-like noise for "
            "ddim and euler_ancestral)."
        )
    if eta and continuous:
        raise ConfigError(
            f"{prefix}.eta={eta} is the DDPM samplers' (ddim, euler_ancestral); process={objective} samples its "
            "ODE deterministically (EDM's stochasticity is process.s_churn). Use eta=null."
        )


def logged_metrics(cfg: DictConfig) -> set[str]:
    """The metrics a run of ``cfg`` logs (into metrics.jsonl and W&B), predicted from the config alone: the
    module's loss terms under train/ and val/, and what each configured metric callback declares."""
    from hydra.utils import get_class

    from ..diffusion import loss_term_names
    from .builders import build_diffusion

    terms = loss_term_names(build_diffusion(cfg).loss_type)
    names = {f"{split}/{term}" for split in ("train", "val") for term in terms}
    for node in callback_nodes(cfg):
        declared = getattr(get_class(node._target_), "logged_metrics", None)
        if declared is not None:
            names |= set(declared(node))
    return names


def validate_objective(cfg: DictConfig) -> None:
    """``objective`` (what a sweeper such as Optuna minimises) must be a metric this run logs: otherwise every
    trial would train to the end and only then fail."""
    objective = cfg.get("objective")
    if not objective:
        return
    logged = logged_metrics(cfg)
    if objective not in logged:
        raise ConfigError(
            f"objective={objective} is never logged by this run, so a sweep could not rank it. This config "
            f"logs: {', '.join(sorted(logged))}. Use one of "
            "these (2-D data: objective=val/sample_distance; images offline: objective=val/loss), or turn the "
            "metric on (val/fid needs metrics=default and the Inception weights)."
        )


def validate_fast_paths(cfg: DictConfig) -> None:
    """``module.fused_optimizer=true`` against the optimizer, precision and clipping (the rule:
    ``fused_optimizer_conflict``; each switch's own values: the module's constructor)."""
    if cfg.module.get("fused_optimizer") is not True:
        return
    from hydra.utils import get_class

    from ..lightning.fast_paths import fused_optimizer_conflict

    trainer = cfg.get("trainer") or {}
    target = cfg.optimizer._target_
    conflict = fused_optimizer_conflict(
        get_class(target), target, trainer.get("precision"), trainer.get("gradient_clip_val")
    )
    if conflict is not None:
        raise ConfigError(conflict)


def validate_data(cfg: DictConfig):
    """Build the DataModule as training will (its constructor holds its rules: a missing image folder,
    channels, sizes; it reads no data) and check it against the DataModule contract; returns it, so the
    network is checked against the data's own ``sample_shape``."""
    from .builders import build_datamodule

    try:
        return build_datamodule(cfg)
    except ConfigError:
        raise
    except (ValueError, OSError, InstantiationException) as err:
        cause = constructor_error(err)
        raise ConfigError(f"data={cfg.data._target_.rsplit('.', 1)[-1]}: {cause}") from err


def validate_model_for_data(cfg: DictConfig, datamodule) -> None:
    """Check the network against the data's kind and shape (nothing built on real memory)."""
    from hydra.utils import get_class

    from ..diffusion.losses import check_offset_noise
    from ..models import UNet

    model_cls = get_class(cfg.model._target_)
    data_name = type(datamodule).__name__
    is_points = getattr(datamodule, "kind", "image") == "points"
    validate_conditioning(cfg)
    if issubclass(model_cls, UNet) and is_points:
        raise ConfigError(f"model={model_cls.__name__} is for images but data={data_name} holds points; use model=mlp.")
    try:
        check_offset_noise(cfg.diffusion.get("offset_noise", 0.0), tuple(datamodule.sample_shape))
    except ValueError as err:
        raise ConfigError(f"data={data_name}: {err}") from err
    if not is_points and cfg.model._target_.endswith("MLPDenoiser"):
        raise ConfigError("model=mlp is for 2-D point data; image data needs a U-Net (e.g. model=unet_tiny).")
    validate_network_builds(cfg, list(datamodule.sample_shape))


def validate_loggers(cfg: DictConfig) -> None:
    """A logger whose package is missing stops now, with the install line (not at the first log call)."""
    import importlib.util

    for name, node in (cfg.get("logger") or {}).items():
        tensorboard = node and str(node.get("_target_", "")).endswith("TensorBoardLogger")
        if tensorboard and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
            raise ConfigError(
                f"logger.{name} writes TensorBoard files but neither tensorboard nor tensorboardX is installed: "
                "pip install -e '.[tensorboard]' (or use logger=wandb / logger=csv)."
            )


def validate_network_builds(cfg: DictConfig, shape: list[int]) -> None:
    """Build the network and the module on PyTorch's meta device (shapes only, no memory, milliseconds) and run
    the network once there: every rule of their constructors (GroupNorm divisibility of concatenated skips, head
    counts, the module's switches, schedules and policies, ...) and the network contract (its arguments, its
    call and output shape) are checked once, there."""
    import torch

    from .builders import build_diffusion, build_module, build_network

    diffusion = build_diffusion(cfg)
    conditional = bool(cfg.data.get("conditional", False))
    try:
        with torch.device("meta"):
            network = build_network(cfg, shape, learned_variance=diffusion.learned_variance)
    except ConfigError:
        raise
    except (ValueError, TypeError, InstantiationException) as err:
        cause = constructor_error(err)
        settings = ", ".join(f"model.{k}={v}" for k, v in cfg.model.items() if not str(k).startswith("_"))
        raise ConfigError(
            f"the network cannot be built for data of shape {tuple(shape)}: {cause} ({settings})."
        ) from err
    with torch.device("meta"), torch.no_grad():
        check_network_output(network, shape, diffusion, conditional)
    warn_if_network_dwarfs_data(network, shape, cfg.model._target_)
    try:
        with torch.device("meta"):
            build_module(cfg, shape, diffusion=diffusion)
    except (ValueError, TypeError, InstantiationException) as err:
        cause = constructor_error(err)
        raise ConfigError(str(cause)) from err


# Parameters per data value (C x H x W) above which a network is far larger than its images: the presets are at
# 4k (unet_tiny, 16x16 digits) to 12k (unet_cifar10, CIFAR-10); unet_cifar10 on 16x16 digits is at 136k.
PARAMS_PER_VALUE_WARNING = 40_000


def warn_if_network_dwarfs_data(network, shape: list[int], target: str) -> None:
    """A warning, not an error: a large network on small images trains, only far slower than the data needs
    (e.g. model=unet_cifar10 on the quickstart's digits took minutes per few steps on 2 CPU cores)."""
    import math
    import warnings

    if len(shape) != 3:  # point data: tiny inputs, and the MLP's width is what it needs
        return
    params, values = sum(p.numel() for p in network.parameters()), math.prod(shape)
    if params > PARAMS_PER_VALUE_WARNING * values:
        warnings.warn(
            f"model={target.rsplit('.', 1)[-1]} has {params / 1e6:.1f}M parameters for images of {values} values "
            f"({'x'.join(map(str, shape))}): {params / values / 1e3:.0f}k per value, where the presets use 4k-12k "
            "(unet_tiny on 16x16 digits, unet_cifar10 on 32x32 CIFAR-10). Each step costs what the network costs, "
            "so this trains far slower than the data needs; a smaller preset fits (e.g. model=unet_tiny for 16x16).",
            UserWarning,
            stacklevel=2,
        )


def validate_conditioning(cfg: DictConfig) -> None:
    """Guidance needs conditioning. (That the data has labels is the DataModule constructor's rule, and that
    the network takes them the network contract's: both are checked where those are built.)"""
    conditional = bool(cfg.data.get("conditional", False))
    scale = cfg.sampling.get("guidance_scale", 1.0)
    if scale is not None and scale != 1.0 and not conditional:
        raise ConfigError(
            f"sampling.guidance_scale={scale} guides a class-conditional model, but this run is unconditional; "
            "add conditioning=class (labelled data), or leave sampling.guidance_scale=1."
        )


def validate_callbacks(cfg: DictConfig) -> None:
    """The callbacks group, each built now (cheap: no data, no network), so its constructor's rules stop a
    bad value (e.g. callbacks.posthoc_ema.snapshot_every=0) before the data is loaded. A value that cannot be
    resolved yet (a sweep's preflight runs before Hydra names the run dir) is passed as a placeholder: paths
    are only stored by the constructors."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None or "_target_" not in node:
            continue
        unresolved = {}
        for key, raw in OmegaConf.to_container(node, resolve=False).items():
            if isinstance(raw, str) and "${" in raw:
                try:
                    node[key]
                except (OmegaConfBaseException, ValueError):
                    unresolved[key] = f"<{key}, not known yet>"  # plain text: merged in, it is not resolved
        try:
            instantiate(node, **unresolved)
        except (ValueError, TypeError, InstantiationException) as err:
            cause = constructor_error(err)
            raise ConfigError(f"callbacks.{name}: {cause}") from err


def validate_fid_options(fid: DictConfig | None) -> None:
    """metrics.fid (ddpm-train and ddpm-eval): the callback is built now, so its constructor's rules (sample
    counts, num_evals, bootstrap, ...) and the search for the Inception weights stop a bad run before any
    training. Its output dir is not needed for that (and may name a run dir Hydra has not made yet)."""
    if fid is None or "_target_" not in fid:
        return
    from ..metrics.inception import InceptionWeightsError

    try:
        instantiate(fid, output_dir=None, progress=False)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, InceptionWeightsError):
            raise cause from None
        raise ConfigError(str(cause)) from err
    except ValueError as err:
        if isinstance(err, InceptionWeightsError):
            raise
        raise ConfigError(str(err)) from err


def validate_training_loop(cfg: DictConfig) -> None:
    """Step counts and the optimizer's own arguments (torch's checks, run on one dummy parameter now)."""
    import torch

    max_steps = (cfg.get("trainer") or {}).get("max_steps", -1)
    if not is_int(max_steps) or (max_steps < 1 and max_steps != -1):
        raise ConfigError(
            f"trainer.max_steps={max_steps!r} is not valid: use a positive number of optimizer steps (e.g. "
            "trainer.max_steps=1000), or -1 to stop by trainer.max_epochs instead."
        )
    try:
        instantiate(cfg.optimizer)(params=[torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError, InstantiationException) as err:
        cause = constructor_error(err)
        settings = ", ".join(f"optimizer.{k}={v}" for k, v in cfg.optimizer.items() if not str(k).startswith("_"))
        raise ConfigError(f"the optimizer refuses its settings: {cause} ({settings}).") from err
