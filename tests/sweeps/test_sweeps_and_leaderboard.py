"""Multirun sweeps through the real CLI, and the leaderboard over their run dirs."""

import csv
import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from ddpm_lab.cli import CONFIG_DIR
from ddpm_lab.cli.leaderboard import main as leaderboard_main
from ddpm_lab.cli.sweep_preflight import sweep_jobs
from ddpm_lab.leaderboard import Run, build_leaderboard
from tests.conftest import run_train_cli as run_cli
from tests.sweeps.test_readme_sweeps import TOY_SIZES

TOY_FAST = ["experiment=toy_moons", "logger=csv", *TOY_SIZES, "diffusion.num_timesteps=20"]


@pytest.mark.slow
def test_four_job_sweep_is_ranked_with_its_two_choices(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    run_cli(
        [
            "-m",
            "schedule=linear,cosine",
            "variance=fixed_small,fixed_large",
            f"hydra.sweep.dir={sweep}",
            f"paths.root_dir={tmp_path}",
            *TOY_FAST,
        ],
        cwd=tmp_path,
    )
    crashed = tmp_path / "crashed"
    failed = run_cli(
        [f"hydra.run.dir={crashed}", f"paths.root_dir={tmp_path}", *TOY_FAST, "variance=learned_range", "loss=mse"],
        cwd=tmp_path,
        check=False,
    )
    assert failed.returncode != 0 and "gives the variance output no gradient" in failed.stderr

    assert (
        leaderboard_main(
            [
                str(sweep),
                str(crashed),
                "--metric",
                "val/sample_distance",
                "--which",
                "final",
                "--out",
                str(tmp_path / "board"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    with open(tmp_path / "board" / "leaderboard.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert {(r["schedule"], r["variance"]) for r in rows} == {
        (s, v) for s in ("linear", "cosine") for v in ("fixed_small", "fixed_large")
    }
    columns = list(rows[0])
    assert columns[2 : columns.index("final val/sample_distance")] == ["schedule", "variance"], "the choice columns"
    assert {r["n"] for r in rows} == {"1"} and {r["not_different_from"] for r in rows} == {"untested (n<2)"}
    values = [float(r["final val/sample_distance"]) for r in rows]
    assert values == sorted(values), "ranked best (lowest) first"
    markdown = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "## Not ranked" in markdown and "crashed" in markdown and "failed: ConfigError" in markdown
    assert "Not ranked" in printed and (tmp_path / "board" / "leaderboard.png").stat().st_size > 1000
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        summary = json.loads((job / "metrics.json").read_text())
        assert summary["status"] == "completed" and summary["global_step"] == 30


def test_runs_under_different_fid_protocols_are_not_ranked_together(tmp_path):
    def run(name, fid, num_samples):
        return Run(
            tmp_path / name,
            {
                "status": "completed",
                "choices": {"schedule": name},
                "best": {"val/fid": {"value": fid, "step": 10}},
                "fid_protocol": {"num_samples": num_samples, "reference": "cifar10:train"},
            },
        )

    board = build_leaderboard(
        [
            run("a", 5.0, 10000),
            run("b", 3.0, 50000),
            run("c", 4.0, 10000),
            Run(tmp_path / "d", {"status": "completed", "choices": {}, "best": {}}),
        ]
    )
    assert [[r.path.name for r in group.runs] for group in board.groups] == [["c", "a"], ["b"]]
    assert [r.path.name for r, _ in board.unranked] == ["d"]


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONFIG_DIR / "ablation").glob("*.yaml")))
def test_ablation_presets_compose(preset):
    GlobalHydra.instance().clear()
    config = "eval" if preset == "sampler_steps" else "train"
    overrides = [f"+ablation={preset}"] + (["ckpt_path=x.ckpt"] if config == "eval" else [])
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name=config, overrides=overrides, return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params and all("," in str(v) for v in params.values())


@pytest.mark.parametrize(
    ("preset", "target"),
    [
        ("launcher=local_parallel", "JoblibLauncher"),
        ("launcher=slurm", "SlurmLauncher"),
        ("search=optuna", "OptunaSweeper"),
    ],
)
def test_launcher_and_search_presets_compose(preset, target):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=[f"+{preset}"], return_hydra_config=True)
    node = cfg.hydra.sweeper if preset.startswith("search") else cfg.hydra.launcher
    assert node._target_.endswith(target)


@pytest.mark.parametrize(
    ("trainer", "shape"),
    [
        (["trainer=cpu"], (1, 1, 0)),
        (["trainer=ddp_cpu"], (1, 2, 0)),
        (["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], (2, 4, 4)),
        (["trainer=gpu"], (1, 1, 1)),
    ],
)
def test_slurm_preset_takes_its_shape_from_the_trainer(trainer, shape):
    """nodes x tasks per node x GPUs per node follow trainer.num_nodes/devices/accelerator (it hard-coded
    4 GPUs, 8 CPUs and 64 GB per job)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=["+launcher=slurm", *trainer], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == shape
    assert launcher.mem_gb is None and launcher.cpus_per_task == 1


def test_leaderboard_rejects_missing_paths(tmp_path, capsys):
    assert leaderboard_main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def preset_jobs(preset: str, extra: list[str] = ()) -> list[list[str]]:
    """The jobs of ``+ablation=<preset>`` as the sweeper expands them, read from the preset's YAML."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=[f"+ablation={preset}", *extra], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = [f"+ablation={preset}", *extra]
    return sweep_jobs(cfg)


def test_iddpm_grid_from_its_yaml_is_eight_distinct_valid_jobs():
    from ddpm_lab.cli.validation import validate_config

    jobs = preset_jobs("iddpm", ["metrics=none"])
    assert len(jobs) == 8
    trained = set()
    for job in jobs:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            cfg = compose(config_name="train", overrides=job)
        validate_config(cfg)
        d = cfg.diffusion
        trained.add((d.schedule, d.var_type, d.loss_type))
    assert len(trained) == 8, "no two jobs train the same model"
    assert ("linear", "fixed_small", "hybrid") not in trained  # identical to fixed_small + mse


@pytest.mark.parametrize("preset", ["loss", "variance", "iddpm", "schedule", "parameterization"])
def test_every_ablation_job_is_valid_and_distinct(preset):
    from ddpm_lab.cli.validation import validate_config

    trained = []
    for job in preset_jobs(preset, ["metrics=none"]):
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            cfg = compose(config_name="train", overrides=job)
        validate_config(cfg)
        trained.append(tuple(cfg.diffusion.values()))
    assert len(set(trained)) == len(trained) >= 3


def test_an_eval_sweep_ranks_its_samplers_together_but_not_other_protocols(tmp_path):
    """ddpm-eval records declare sampler/steps as their subject: a sampler sweep is one table, while a run
    with another sample count still stands apart."""

    def run(name, fid, sampler, steps, num_samples=50000):
        return Run(
            tmp_path / name,
            {
                "status": "completed",
                "choices": {"sampler": sampler, "steps": steps},
                "best": {"val/fid": {"value": fid, "step": 0}},
                "fid_protocol": {"num_samples": num_samples, "sampler": sampler, "sampler_steps": steps},
                "protocol_subject": ["sampler", "sampler_steps", "eta"],
            },
        )

    board = build_leaderboard(
        [
            run("a", 9.0, "ddim", 25),
            run("b", 4.0, "ddpm", 1000),
            run("c", 6.0, "ddim", 100),
            run("d", 1.0, "ddim", 50, 10),
        ]
    )
    assert [[r.path.name for r in group.runs] for group in board.groups] == [["b", "c", "a"], ["d"]]


def test_leaderboard_lists_unreadable_records_instead_of_crashing(tmp_path, capsys):
    """A binary or non-object metrics.json gave a raw traceback. Beside a ranked run they are listed as not ranked;
    alone, nothing can be ranked: the command refuses with each reason and writes nothing."""
    for name, payload in (("binary", b"\x80\x81\xfe\x00"), ("list", b"[1, 2]")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_bytes(payload)
    assert leaderboard_main([str(tmp_path), "--out", str(tmp_path / "board")]) == 2
    err = capsys.readouterr().err
    assert "no readable metrics.json" in err and "metrics.json is not a JSON object" in err
    assert not (tmp_path / "board").exists()
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "metrics.json").write_text('{"status": "completed", "best": {"val/fid": {"value": 3.0}}}')
    assert leaderboard_main([str(tmp_path), "--out", str(tmp_path / "board")]) == 0
    markdown = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "binary" in markdown and "no readable metrics.json" in markdown
    assert "list" in markdown and "metrics.json is not a JSON object" in markdown


def test_a_sampler_nfe_sweep_gets_one_curve_per_sampler_sorted_by_nfe(tmp_path):
    from ddpm_lab.leaderboard import metric_against_nfe, write_outputs

    def run(name, distance, sampler, steps, nfe):
        (tmp_path / name).mkdir()
        return Run(
            tmp_path / name,
            {
                "status": "completed",
                "choices": {"sampler": sampler, "steps": steps, "nfe": nfe},
                "final": {"val/sample_distance": {"value": distance, "step": 0}},
            },
        )

    runs = [run("a", 0.3, "ddim", 10, 10), run("b", 0.1, "ddim", 50, 50), run("c", 0.05, "heun", 10, 19)]
    runs.append(run("d", 0.2, "heun", 3, 5))
    board = build_leaderboard(runs, "val/sample_distance", "final")
    assert metric_against_nfe(board) == {
        "sampler=ddim": [(10, 0.3), (50, 0.1)],
        "sampler=heun": [(5, 0.2), (19, 0.05)],
    }
    outputs = write_outputs(board, tmp_path / "board")
    assert outputs["nfe_png"].stat().st_size > 10_000


def test_leaderboard_defaults_to_the_headline_metric_and_never_overwrites_with_nothing(tmp_path, capsys):
    """A toy sweep ranked with no --metric uses its records' headline_metric; asked for a metric no run has, it
    exits non-zero naming the metrics the runs have, and the leaderboard already written stays as it was."""
    for seed, value in ((0, 0.2), (1, 0.1)):
        run = tmp_path / f"job{seed}"
        run.mkdir()
        record = {"status": "completed", "seed": seed, "arm": f"a{seed}", "headline_metric": "val/sample_distance"}
        record["best"] = {"val/sample_distance": {"value": value, "step": 5}}
        (run / "metrics.json").write_text(json.dumps(record))
    assert leaderboard_main([str(tmp_path)]) == 0
    board = tmp_path / "leaderboard.md"
    assert "best val/sample_distance (lower is better)" in board.read_text()
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    capsys.readouterr()
    assert leaderboard_main([str(tmp_path), "--metric", "val/fid"]) == 2
    err = capsys.readouterr().err
    assert "no val/fid recorded" in err and "val/sample_distance" in err and "Nothing was written" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == written
    assert leaderboard_main([str(tmp_path / "job0" / "nothing_here")]) == 2  # a missing path, as before
