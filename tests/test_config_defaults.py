"""One source of truth for defaults: where a YAML file configures one of ddpm-lab's classes with a literal
value, the class's own default (what a library user gets) is the same value. Presets whose purpose is to
differ (experiments, debug presets, the smaller U-Nets) are left out; `unet_cifar10` is the paper's network,
and so the U-Net's defaults."""

import inspect

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

from ddpm_lab.cli import CONFIG_DIR

VARIANTS = ("experiment/", "debug/", "model/unet_celeba64", "model/unet_mnist", "model/unet_tiny", "ablation/")
FILES = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if not str(p.relative_to(CONFIG_DIR)).startswith(VARIANTS))


def configured(node, prefix=""):
    """(key path, target, key, literal value) of every ddpm_lab target's settings in a YAML tree."""
    if not isinstance(node, dict):
        return
    target = node.get("_target_")
    if isinstance(target, str) and target.startswith("ddpm_lab."):
        for key, value in node.items():
            if not key.startswith("_") and not (isinstance(value, str) and "${" in value):
                yield f"{prefix}.{key}".lstrip("."), target, key, value
    for key, value in node.items():
        yield from configured(value, f"{prefix}.{key}")


# Builders that pass their **options on to a class, whose defaults those options then have.
FORWARDS = {"ddpm_lab.diffusion.build_gaussian_diffusion": "ddpm_lab.diffusion.GaussianDiffusion"}


def parameter_of(target: str, key: str) -> inspect.Parameter | str | None:
    """``key`` in the target's own signature (or the class a builder forwards to); "forwarded" where it takes
    ``**kwargs`` on to a base class (a DataModule's batch size: each data set's YAML sets its own, the shared
    base cannot default them all)."""
    parameters = inspect.signature(get_object(target)).parameters
    if key not in parameters and target in FORWARDS:
        return parameter_of(FORWARDS[target], key)
    if key in parameters:
        return parameters[key]
    return "forwarded" if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()) else None


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_yaml_values_equal_the_code_defaults(path):
    for where, target, key, value in configured(OmegaConf.to_container(OmegaConf.load(path), resolve=False)):
        parameter = parameter_of(target, key)
        assert parameter is not None, f"{path.name}: {where} is not an argument of {target}"
        if parameter == "forwarded" or parameter.default is inspect.Parameter.empty:
            continue
        default = list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
        assert value == default, f"{path.name}: {where}={value!r} but {target} defaults to {parameter.default!r}"


def test_the_check_sees_the_configured_classes():
    seen = {target for path in FILES for _, target, _, _ in configured(OmegaConf.to_container(OmegaConf.load(path)))}
    assert {"ddpm_lab.lightning.DiffusionModule", "ddpm_lab.lightning.FIDCallback"} <= seen


def test_run_sampling_defaults_are_the_modules_and_presets_leave_eta_to_its_sampler():
    """``sampling`` has no ``_target_``, so the check above cannot see it: the composed default equals
    SAMPLING_DEFAULTS (what a DiffusionModule built in Python samples with), and no sampler preset restates the
    sampler's eta (diffusion.DEFAULT_ETA is its one source)."""
    from hydra import compose, initialize_config_dir

    from ddpm_lab.lightning.module import SAMPLING_DEFAULTS

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=["~experiment"])
    assert OmegaConf.to_container(cfg.sampling) == SAMPLING_DEFAULTS
    for preset in sorted((CONFIG_DIR / "sampler").glob("*.yaml")):
        assert OmegaConf.load(preset).eta is None, preset.name
