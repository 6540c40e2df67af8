"""The leaderboard as tables: one row per arm (mean over seeds, std, n, 95% interval, significance marks) and
one row per run; and the Markdown/CSV files that hold them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .. import metric_registry
from ..stats import INTERVAL_METHOD, TEST_METHOD
from .ranking import Arm, Group, Leaderboard

# The bootstrap interval of one FID evaluation (FIDCallback, metrics.fid.bootstrap), shown for 1-seed arms
EVAL_INTERVAL = {"val/fid": ("val/fid_ci_low", "val/fid_ci_high")}


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def overrides_label(arm: Arm) -> str:
    return " ".join(arm.runs[0].summary.get("overrides") or [])


def arm_label(board: Leaderboard, arm: Arm) -> str:
    parts = [f"{c}={arm.choices.get(c)}" for c in board.choice_columns]
    if board.show_overrides and overrides_label(arm):
        parts.append(overrides_label(arm))
    return ", ".join(parts) or arm.runs[0].path.name


def eval_interval(board: Leaderboard, arm: Arm) -> tuple[float, float] | None:
    """The FID bootstrap interval of a 1-seed arm's measurement, where one was recorded."""
    if board.metric not in EVAL_INTERVAL or arm.summary.n != 1:
        return None
    low, high = (arm.runs[0].value_at_same_step(board.metric, c, board.which) for c in EVAL_INTERVAL[board.metric])
    return None if low is None or high is None else (low, high)


def shown_metrics(board: Leaderboard) -> list[str]:
    return [
        m
        for m in metric_registry.shown_metrics()
        if m != board.metric and any(r.value(m, "final") is not None for g in board.groups for r in g.runs)
    ]


def significance_mark(arm: Arm, group: Group) -> str:
    """'~2 3': not significantly different from the arms ranked 2 and 3; 'significant': different from every
    arm it was tested against; 'untested': no pair with >= 2 seeds on both sides includes it."""
    if len(group.arms) < 2:
        return ""
    tested = [c for c in group.comparisons if c.test is not None and arm.rank in (c.first, c.second)]
    if not tested:
        return "untested (n<2)" if arm.summary.n < 2 else "untested (the other arms have n<2)"
    return ("~" + " ".join(map(str, arm.indistinguishable_from))) if arm.indistinguishable_from else "significant"


def arm_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per arm, all groups) of leaderboard.csv/.md."""
    shown = shown_metrics(board)
    extra = ["overrides"] if board.show_overrides else []
    header = [
        "group",
        "rank",
        *board.choice_columns,
        *extra,
        f"{board.which} {board.metric}",
        "std",
        "n",
        "ci95_low",
        "ci95_high",
        "not_different_from",
        "eval_ci95",
        "seeds",
        "code",
        *shown,
        "global_step",
        "wall_time_s",
        "run_dirs",
    ]
    rows = []
    for g, group in enumerate(board.groups, start=1):
        for arm in group.arms:
            s, first = arm.summary, arm.runs[0]
            interval = eval_interval(board, arm)
            means = {m: [v for r in arm.runs if (v := r.value(m, "final")) is not None] for m in shown}
            walls = [w for r in arm.runs if isinstance(w := r.summary.get("wall_time_s"), int | float)]
            rows.append(
                [
                    str(g),
                    str(arm.rank),
                    *(fmt(arm.choices.get(c)) for c in board.choice_columns),
                    *([overrides_label(arm)] if extra else []),
                    fmt(s.mean),
                    fmt(s.std),
                    str(s.n),
                    fmt(s.ci_low),
                    fmt(s.ci_high),
                    significance_mark(arm, group),
                    f"[{fmt(interval[0])}, {fmt(interval[1])}]" if interval else "",
                    " ".join(fmt(seed) for seed in arm.seeds),
                    " ".join(sorted({run.code_version for run in arm.runs})),
                    *(fmt(sum(v) / len(v)) if v else "" for v in means.values()),
                    fmt(first.summary.get("global_step")),
                    fmt(sum(walls) / len(walls) if walls else None),
                    ";".join(str(r.path) for r in arm.runs),
                ]
            )
    return header, rows


def run_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per ranked run) of runs.csv: the per-seed values behind each arm."""
    header = ["group", "arm_rank", *board.choice_columns, "seed", f"{board.which} {board.metric}", "step", "run_dir"]
    rows = []
    for g, group in enumerate(board.groups, start=1):
        for arm in group.arms:
            for run, value in zip(arm.runs, arm.values, strict=True):
                entry = (run.summary.get(board.which) or {}).get(board.metric)
                rows.append(
                    [
                        str(g),
                        str(arm.rank),
                        *(fmt(run.choices.get(c)) for c in board.choice_columns),
                        fmt(run.seed),
                        fmt(value),
                        fmt(entry.get("step") if isinstance(entry, dict) else None),
                        str(run.path),
                    ]
                )
    return header, rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def mixed_code_warning(group: Group) -> str:
    return (
        f"this group mixes code versions ({', '.join(group.code_versions)}): a code change can move the numbers "
        "by itself (README, 'Changes that move numbers'); compare runs of one version where it matters."
    )


def describe_protocol(protocol: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in protocol.items() if v is not None) or "no protocol fields"


def markdown(board: Leaderboard) -> str:
    header, rows = arm_rows(board)
    lines = [
        f"# Leaderboard: {board.which} {board.metric} ({'lower' if board.ascending else 'higher'} is better)",
        "",
        f"One row per arm (runs that differ only in seed): mean over seeds, {INTERVAL_METHOD}. "
        f"`not_different_from` lists the arms it cannot be told apart from ({TEST_METHOD}); `significant`: "
        "different from every other tested arm; `untested (n<2)`: an arm with one seed has no spread to test "
        "against (run seeds, e.g. `+seeds=three`). `eval_ci95`: the bootstrap interval of a single FID "
        "measurement (sampling noise only, not seed noise).",
        "",
    ]
    if len(board.groups) > 1:
        lines += ["Groups were measured under different protocols and are not comparable with each other.", ""]
    for g, group in enumerate(board.groups, start=1):
        lines += [
            f"## Group {g}: {describe_protocol(group.protocol)}",
            "",
            "| " + " | ".join(header[1:]) + " |",
            "|" + "---|" * (len(header) - 1),
        ]
        lines += ["| " + " | ".join(row[1:]) + " |" for row in rows if row[0] == str(g)]
        tested = [c for c in group.comparisons if c.test is not None]
        if tested:
            lines += ["", f"Pairwise comparisons ({TEST_METHOD}):", "", "| arms | t | df | p | p (Holm) | verdict |"]
            lines.append("|---|---|---|---|---|---|")
            for c in tested:
                verdict = "different" if c.significant else "not significant"
                lines.append(
                    f"| {c.first} vs {c.second} | {fmt(c.test.statistic)} | {fmt(c.test.df)} | "
                    f"{fmt(c.test.p_value)} | {fmt(c.p_adjusted)} | {verdict} |"
                )
        if len(group.code_versions) > 1:
            lines += ["", f"Warning: {mixed_code_warning(group)}"]
        for arm in group.arms:
            if arm.duplicate_seeds:
                repeated = arm.duplicate_seeds
                lines += ["", f"Arm {arm.rank} has seed(s) {repeated} more than once: its spread is understated."]
        lines.append("")
    if board.unranked:
        lines += ["## Not ranked", "", "| run_dir | reason |", "|---|---|"]
        lines += [f"| {run.path} | {reason} |" for run, reason in board.unranked]
    return "\n".join(lines) + "\n"
