"""Seeds as a sweep axis: the statistics against scipy and grouping runs into arms. The real 2 x 3-seed toy
sweep runs as README pastes it, in tests/sweeps/test_readme_sweeps.py."""

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ddpm_lab.cli.leaderboard import main as leaderboard_main
from ddpm_lab.leaderboard import Run, build_leaderboard, markdown, write_outputs
from ddpm_lab.stats import holm_adjust, summarize, welch_test
from tests.conftest import run_train_cli
from tests.sweeps.test_readme_sweeps import TOY_SIZES

FIXED = {
    "a": [3.1, 2.9, 3.4, 3.0],
    "b": [3.9, 4.4, 4.1],
    "c": [3.05, 3.2, 2.8, 3.3, 3.1],
}


@pytest.mark.parametrize(("first", "second"), [("a", "b"), ("a", "c"), ("b", "c")])
def test_welch_test_equals_scipy(first, second):
    ours = welch_test(FIXED[first], FIXED[second])
    theirs = scipy_stats.ttest_ind(FIXED[first], FIXED[second], equal_var=False)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-10)
    assert ours.df == pytest.approx(theirs.df, rel=1e-12)


@pytest.mark.parametrize("name", sorted(FIXED))
def test_t_interval_equals_scipy(name):
    x = np.array(FIXED[name])
    low, high = scipy_stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    s = summarize(x)
    assert (s.n, s.mean, s.std) == (len(x), pytest.approx(x.mean()), pytest.approx(x.std(ddof=1)))
    assert (s.ci_low, s.ci_high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))


def test_one_value_has_no_interval_and_no_test():
    assert summarize([2.5]).ci_low is None and summarize([2.5]).std is None
    assert welch_test([1.0], [2.0, 3.0]) is None


def test_constant_samples_are_equal_or_certainly_different():
    assert welch_test([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    assert welch_test([1.0, 1.0], [2.0, 2.0]).p_value == 0.0


def test_holm_adjustment_by_hand():
    # sorted p: 0.01 (x3), 0.02 (x2) -> 0.04, 0.04 (x1) -> running max 0.04 -> [0.03, 0.04, 0.04]
    assert holm_adjust([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm_adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def record(tmp_path, name, value, arm, seed, protocol=None, choices=None):
    return Run(
        tmp_path / name,
        {
            "status": "completed",
            "choices": choices or {"schedule": arm},
            "arm": arm,
            "seed": seed,
            "best": {"val/fid": {"value": value, "step": 10}},
            "fid_protocol": protocol or {"num_samples": 10000},
        },
    )


def test_runs_that_differ_in_seed_only_are_one_arm(tmp_path):
    board = build_leaderboard([record(tmp_path, f"r{s}", 5.0 + s, "x", s) for s in range(3)])
    (group,) = board.groups
    (arm,) = group.arms
    assert arm.summary.n == 3 and arm.summary.mean == pytest.approx(6.0) and arm.seeds == [0, 1, 2]


def test_runs_that_differ_in_protocol_only_are_never_one_arm(tmp_path):
    runs = [record(tmp_path, "a", 5.0, "x", 0), record(tmp_path, "b", 6.0, "x", 1, {"num_samples": 50000})]
    board = build_leaderboard(runs)
    assert [[arm.summary.n for arm in g.arms] for g in board.groups] == [[1], [1]]


def test_runs_that_differ_in_choice_only_are_two_arms_and_ranked(tmp_path):
    runs = [record(tmp_path, "a", 5.0, "linear", 0), record(tmp_path, "b", 4.0, "cosine", 0)]
    (group,) = build_leaderboard(runs).groups
    assert [arm.choices["schedule"] for arm in group.arms] == ["cosine", "linear"]
    assert all(c.test is None for c in group.comparisons), "one seed each: nothing to test"
    assert "untested (n<2)" in markdown(build_leaderboard(runs))


def test_equal_choices_with_different_configs_show_their_overrides(tmp_path):
    runs = [record(tmp_path, "a", 5.0, "p", 0, choices={"schedule": "linear"})]
    runs.append(record(tmp_path, "b", 4.0, "q", 0, choices={"schedule": "linear"}))
    runs[0].summary["overrides"], runs[1].summary["overrides"] = ["optimizer.lr=1e-3"], ["optimizer.lr=2e-4"]
    board = build_leaderboard(runs)
    assert board.show_overrides and "optimizer.lr=2e-4" in markdown(board)


def test_close_arms_are_marked_and_distant_ones_are_not(tmp_path):
    runs = [record(tmp_path, f"a{i}", v, "a", i) for i, v in enumerate(FIXED["a"])]
    runs += [record(tmp_path, f"b{i}", v, "b", i) for i, v in enumerate(FIXED["b"])]
    runs += [record(tmp_path, f"c{i}", v, "c", i) for i, v in enumerate(FIXED["c"])]
    (group,) = build_leaderboard(runs).groups
    ranks = {arm.runs[0].summary["arm"]: arm for arm in group.arms}
    assert ranks["a"].indistinguishable_from == [ranks["c"].rank]
    assert ranks["b"].indistinguishable_from == [] and ranks["b"].rank == 3
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    raw = [scipy_stats.ttest_ind(FIXED[x], FIXED[y], equal_var=False).pvalue for x, y in pairs]
    assert sorted(c.p_adjusted for c in group.comparisons) == pytest.approx(sorted(holm_adjust(raw)))
    write_outputs(build_leaderboard(runs), tmp_path / "board")
    assert (tmp_path / "board" / "arms.png").stat().st_size > 5000


def test_the_leaderboard_logs_its_arm_table_to_an_offline_wandb_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for arm, values in (("a", FIXED["a"]), ("b", FIXED["b"])):
        for seed, value in enumerate(values):
            run_dir = tmp_path / "sweep" / f"{arm}{seed}"
            run_dir.mkdir(parents=True)
            summary = record(tmp_path, "x", value, arm, seed).summary
            (run_dir / "metrics.json").write_text(json.dumps(summary))
    assert leaderboard_main([str(tmp_path / "sweep"), "--wandb", "--out", str(tmp_path / "board")]) == 0
    assert "W&B run:" in capsys.readouterr().out
    (offline,) = (tmp_path / "board" / "wandb").glob("offline-run-*")
    assert list(offline.glob("*.wandb")) and (tmp_path / "board" / "arms.png").exists()


@pytest.mark.slow
def test_sampling_seeds_of_one_checkpoint_are_one_arm(tmp_path):
    """ddpm-eval with seed=0 and seed=1 measures two sample sets of the same model: one arm, n=2."""
    from ddpm_lab.cli.evaluate import evaluate
    from ddpm_lab.leaderboard import find_runs
    from tests.conftest import compose_config

    run_train_cli(
        [
            "experiment=toy_moons",
            "logger=csv",
            *TOY_SIZES,
            "diffusion.num_timesteps=20",
            f"hydra.run.dir={tmp_path / 't'}",
        ],
        cwd=tmp_path,
    )
    ckpt = tmp_path / "t" / "checkpoints" / "last.ckpt"
    for seed in (0, 1):
        overrides = [f"ckpt_path={ckpt}", f"seed={seed}", "sample_distance.num_samples=200", "device=cpu"]
        evaluate(compose_config("eval", tmp_path / f"eval{seed}", overrides))
    board = build_leaderboard(find_runs([tmp_path / "eval0", tmp_path / "eval1"]), "val/sample_distance", "final")
    (group,) = board.groups
    (arm,) = group.arms
    assert arm.seeds == ["42:0", "42:1"] and arm.values[0] != arm.values[1]
