"""The objective switch (``process=ddpm|ddpm_eps|ddpm_v|edm|flow_matching``) through the real configs, start-up
validation and entry points: what each objective is built from, what it refuses, and that every one trains,
samples and is measured (FID, ODE likelihood) end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from omegaconf import open_dict

from ddpm_lab.cli.builders import build_module
from ddpm_lab.cli.sample import sample
from ddpm_lab.cli.train import train
from ddpm_lab.cli.validation import ConfigError, validate_config
from tests.conftest import FAST_TRAINER, TINY_UNET, compose_config, fid_overrides
from tests.sweeps.test_readme_sweeps import TOY_SIZES, readme_section_commands, repo_copy, run, user_env
from tests.sweeps.test_sweeps_and_leaderboard import preset_jobs

TOY = ["experiment=toy_moons", "data.num_train=256", "data.num_val=64", "data.num_test=64", "model.hidden_dim=32"]


@pytest.mark.parametrize(
    ("process", "objective", "mean_type"),
    [("ddpm", "ddpm", "v"), ("ddpm_eps", "ddpm", "eps"), ("ddpm_v", "ddpm", "v"), ("edm", "edm", None)],
)
def test_process_choice_builds_its_objective_over_the_experiments(tmp_path, process, objective, mean_type):
    """A process preset wins over the experiment's choices (toy_moons trains v; ddpm_eps makes it eps), EDM's
    sigma_data is the data's (1 for standardised points) and its sampler preset replaces the experiment's ddpm."""
    cfg = compose_config("train", tmp_path, [*TOY, f"process={process}"])
    module = build_module(cfg, (2,))
    assert module.diffusion.objective == objective
    if objective == "ddpm":
        assert module.diffusion.mean_type == mean_type and module.sampling["sampler"] == "ddpm"
    else:
        assert module.diffusion.sigma_data == 1.0 and module.sampling["sampler"] == "heun"
    images = compose_config("train", tmp_path, ["process=edm"])
    assert build_module(images, (1, 16, 16)).diffusion.sigma_data == 0.5  # EDM's for images in [-1, 1]
    assert compose_config("train", tmp_path, ["process=ddpm_v", "parameterization=x0"]).diffusion.mean_type == "x0"


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["process=edm", "variance=learned_range", "loss=hybrid"], "variance=learned_range"),
        (["experiment=cifar10_iddpm", "process=flow_matching"], "cannot use these DDPM settings"),
        (["process=edm", "loss_weighting=min_snr"], "loss_weighting=min_snr"),
        (["process=edm", "schedule=cosine"], "would change nothing"),
        (["process=flow_matching", "diffusion.num_timesteps=50"], "would change nothing"),
        (["process=flow_matching", "sampler=ddim"], "is not valid for process=flow_matching"),
        (["process=edm", "sampler=midpoint"], "allowed values: heun, euler"),
        (["process=edm", "sampling.steps=null"], "continuous in time"),
        (["process=edm", "sampling.eta=0.5"], "s_churn"),
        (["process=edm", "module.timestep_sampler=loss_aware"], "discrete DDPM chain"),
        (["process=flow_matching", "process.time_sampling=beta"], "process.time_sampling=.beta."),
        (["process=edm", "process.sigma_min=100"], "sigma_min < sigma_max"),
        (["process=edm"], "metrics.fid.sampler='ddim' is not valid for process=edm"),
    ],
)
def test_what_an_objective_cannot_use_is_refused_at_start_up(tmp_path, overrides, says):
    """Each refusal names the setting and the way out, before any data or network is built. The last case is
    the default FID sampler (ddim), which an image run of EDM must replace (metrics.fid.sampler=heun)."""
    extra = [] if says.startswith("metrics") else ["metrics=none"]
    cfg = compose_config("train", tmp_path, [*overrides, *extra])
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        validate_config(cfg)


def test_objective_ablation_is_four_valid_distinct_arms_at_one_sampler(tmp_path):
    """+ablation=objective: DDPM eps, DDPM v, EDM and flow matching, every one valid, all with Heun at 25 steps."""
    built = []
    for job in preset_jobs("objective", ["experiment=toy_moons"]):
        cfg = compose_config("train", tmp_path, job)
        validate_config(cfg)
        module = build_module(cfg, (2,))
        built.append((module.diffusion.objective, getattr(module.diffusion, "mean_type", None)))
        assert module.sampling["sampler"] == "heun" and module.sampling["steps"] == 25
    assert built == [("ddpm", "eps"), ("ddpm", "v"), ("edm", None), ("flow_matching", None)]


@pytest.mark.slow
@pytest.mark.parametrize("process", ["edm", "flow_matching"])
def test_continuous_objective_trains_samples_and_is_measured(tmp_path, process, inception_weights):
    """A continuous-time objective through ddpm-train on images: FID with its own sampler and NFE, the ODE
    likelihood under its own name (never DDPM's bound), the record's choices without the DDPM groups, and
    ddpm-sample from its checkpoint."""
    metrics = [o for o in fid_overrides(inception_weights, tmp_path) if not o.startswith("diffusion.")]
    metrics += ["metrics.fid.sampler=heun", "metrics.fid.steps=2", "metrics.nll.ode_steps=3", "logger=csv"]
    overrides = [f"process={process}", *FAST_TRAINER, *TINY_UNET, *metrics]
    cfg = compose_config("train", tmp_path, overrides)
    summary = train(cfg)
    assert summary["status"] == "completed"
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "val/ode_nll_bpd" in record["best"] and "val/nll_bpd" not in record["best"]
    # 3 ODE steps measure the plumbing, not the value (the likelihood's accuracy: tests/diffusion's oracles)
    assert np.isfinite(record["best"]["val/ode_nll_bpd"]["value"]) and "val/fid" in record["best"]
    assert record["choices"]["process"] == process and "schedule" not in record["choices"]
    assert record["fid_protocol"]["nfe"] == (3 if process == "edm" else 4)  # heun, 2 steps
    assert record["nll_protocol"]["objective"] == process and record["nll_protocol"]["ode_steps"] == 3
    out = tmp_path / "sampled"
    sample_cfg = compose_config(
        "sample",
        tmp_path,
        [f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}", "num_samples=3", "sampling.steps=2"],
    )
    with open_dict(sample_cfg):
        sample_cfg.paths.output_dir = str(out)
    drawn = sample(sample_cfg)
    assert drawn["sampler"] == "heun" and np.load(out / "samples.npz")["arr_0"].shape == (3, 16, 16, 1)


SECTION = readme_section_commands("DDPM, EDM and flow matching")


@pytest.mark.slow
def test_readme_objective_commands_run_as_pasted(tmp_path):
    """The section's commands from the root of a repository copy, offline, with small sizes appended (one seed
    of the three: the sweep's seed list is a size): two single runs, the objective sweep, its leaderboard, an
    NFE sweep over two of its checkpoints and that sweep's leaderboard with one NFE curve per objective."""
    trains = [line for line in SECTION if line.startswith("ddpm-train ")]
    assert len(SECTION) == 6 and len(trains) == 3
    repo, env = repo_copy(tmp_path), user_env()
    for line in trains:
        run(line, repo, env, [*TOY_SIZES, *(["hydra.sweeper.params.seed=0"] if " -m " in line else [])])
    runs = sorted((repo / "logs" / "train" / "runs").iterdir())
    assert [json.loads((r / "metrics.json").read_text())["choices"]["process"] for r in runs] == [
        "edm",
        "flow_matching",
    ]
    (sweep,) = (repo / "logs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    records = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    assert [r["choices"]["process"] for r in records] == ["ddpm_eps", "ddpm_v", "edm", "flow_matching"]
    assert all(r["status"] == "completed" for r in records)
    board = next(line for line in SECTION if line.startswith("ddpm-leaderboard logs/train"))
    run(board.replace("logs/train/multiruns/<date>", str(sweep.relative_to(repo))), repo, env)
    with open(sweep / "leaderboard.csv") as handle:
        assert {row["process"] for row in csv.DictReader(handle)} == {"ddpm_eps", "ddpm_v", "edm", "flow_matching"}
    (nfe_line,) = [line for line in SECTION if line.startswith("ddpm-eval ")]
    nfe_line = nfe_line.replace("<run a>", str(jobs[2].relative_to(repo))).replace(
        "<run b>", str(jobs[3].relative_to(repo))
    )
    run(nfe_line, repo, env, ["sample_distance.num_samples=200", "limit_batches=1", "device=cpu"])
    (evals,) = (repo / "logs" / "eval" / "multiruns").iterdir()
    eval_board = next(line for line in SECTION if line.startswith("ddpm-leaderboard logs/eval"))
    run(eval_board.replace("logs/eval/multiruns/<date>", str(evals.relative_to(repo))), repo, env)
    assert (evals / "metric_vs_nfe.png").stat().st_size > 10_000
    with open(evals / "leaderboard.csv") as handle:
        rows = list(csv.DictReader(handle))
    nfe = {(row["process"], int(row["nfe"])) for row in rows}
    assert nfe == {("edm", 5), ("edm", 9), ("edm", 19), ("edm", 49)} | {("flow_matching", n) for n in (6, 10, 20, 50)}


@pytest.mark.parametrize("process", ["edm", "flow_matching"])
def test_class_conditioning_and_guidance_work_with_every_objective(tmp_path, process):
    """conditioning=class with classifier-free guidance under a continuous objective: guidance scale 3 and
    other labels change the samples; the same seed and labels give the same samples."""
    import torch

    cfg = compose_config(
        "train", tmp_path, [f"process={process}", "conditioning=class", *TINY_UNET, "sampling.steps=2"]
    )
    module = build_module(cfg, (1, 16, 16))
    torch.manual_seed(0)
    for p in module.ema.module.parameters():  # a network whose class embedding matters
        p.data.normal_(0, 0.05)

    def draw(scale, labels):
        return module.generate(4, torch.Generator().manual_seed(0), labels=torch.tensor(labels), guidance_scale=scale)

    plain = draw(1.0, [0, 1, 2, 3])
    assert not torch.allclose(plain, draw(3.0, [0, 1, 2, 3]))
    assert not torch.allclose(plain, draw(1.0, [4, 5, 6, 7]))
    assert torch.equal(plain, draw(1.0, [0, 1, 2, 3]))
