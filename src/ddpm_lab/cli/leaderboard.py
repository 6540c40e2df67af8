"""``ddpm-leaderboard PATH...``: rank the arms (runs that differ only in seed) found under run/multirun dirs.

    ddpm-leaderboard logs/train/multiruns/2026-11-23_10-00-00
    ddpm-leaderboard logs/ --metric val/sample_distance --which final --top 10

Prints a table per protocol group (rich): per arm the mean over seeds, std, n, 95% t-interval and the arms it
is not significantly different from (Welch, Holm-adjusted); lists runs that crashed or lack the metric apart;
writes leaderboard.md/.csv (arms), runs.csv (runs), arms.png (error bars), leaderboard.png (metric against
step per run) and metric_vs_nfe.png for sampler x NFE sweeps into --out (default: the first PATH); --wandb
also logs the table to a W&B run (offline by default). Works offline from the runs' metrics.json / .jsonl.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from ..leaderboard import Leaderboard, Run, arm_rows, build_leaderboard, find_runs, log_to_wandb, write_outputs
from ..leaderboard.tables import mixed_code_warning
from ..stats import TEST_METHOD
from .common import version_line


def default_metric(runs: list[Run]) -> str:
    """The runs' ``headline_metric`` where they agree (records before it existed: val/fid)."""
    headlines = {run.summary.get("headline_metric") for run in runs} - {None}
    if len(headlines) > 1:
        raise ValueError(
            f"the runs have different headline metrics ({', '.join(sorted(headlines))}): pass --metric to choose one."
        )
    return headlines.pop() if headlines else "val/fid"


def nothing_to_rank(board: Leaderboard) -> str:
    """Why nothing was ranked: each run's reason and the metrics the completed runs do have."""
    if not board.runs:
        return "no run records (metrics.json) under the given paths: point it at a run or sweep dir. Nothing written."
    completed = [run for run in board.runs if run.status == "completed"]
    have = sorted({m for run in completed for m in (run.summary.get(board.which) or {})})
    reasons = "; ".join(f"{run.path}: {reason}" for run, reason in board.unranked[:5])
    more = f" (and {len(board.unranked) - 5} more)" if len(board.unranked) > 5 else ""
    return (
        f"nothing to rank by {board.which} {board.metric}: {reasons}{more}. The completed runs' {board.which} "
        f"metrics: {', '.join(have[:12]) or 'none'}; rank by one of them with --metric. Nothing was written."
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ddpm-leaderboard", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line("ddpm-leaderboard"))
    p.add_argument("paths", nargs="+", help="run dirs or dirs containing them (searched recursively)")
    p.add_argument(
        "--metric",
        help="metric to rank by (default: the runs' headline_metric, e.g. val/fid for images, "
        "val/sample_distance for 2-D data); its direction is the registry's",
    )
    p.add_argument("--which", choices=["best", "final"], default="best", help="best value over training or final")
    order = p.add_mutually_exclusive_group()
    order.add_argument(
        "--ascending",
        dest="ascending",
        action="store_true",
        default=None,
        help="lower first (default: as the metric registry says)",
    )
    order.add_argument("--descending", dest="ascending", action="store_false", help="higher first")
    p.add_argument("--top", type=int, help="show only the N best arms of each group")
    p.add_argument("--out", help="where to write leaderboard.md/.csv/.png (default: the first PATH)")
    p.add_argument("--wandb", action="store_true", help="also log the arm table and pictures to a W&B run")
    args = p.parse_args(argv)
    try:
        runs = find_runs(args.paths)
    except FileNotFoundError as err:
        print(f"ddpm-leaderboard: {err}", file=sys.stderr)
        return 2
    try:
        metric = args.metric or default_metric(runs)
        board = build_leaderboard(runs, metric, args.which, args.ascending, args.top)
    except ValueError as err:
        print(f"ddpm-leaderboard: {err}", file=sys.stderr)
        return 2
    if not board.groups:  # refuse before writing: an empty table must not replace a real one
        print(f"ddpm-leaderboard: {nothing_to_rank(board)}", file=sys.stderr)
        return 2
    console = Console(width=200)
    header, rows = arm_rows(board)
    for g, group in enumerate(board.groups, start=1):
        described = ", ".join(f"{k}={v}" for k, v in group.protocol.items() if v is not None)
        table = Table(title=f"{args.which} {metric}, group {g}" + (f" [{described}]" if described else ""))
        for name in header[1:]:
            table.add_column(name)
        for row in rows:
            if row[0] == str(g):
                table.add_row(*row[1:])
        console.print(table)
        if len(group.code_versions) > 1:
            console.print(f"[yellow]Group {g}: {mixed_code_warning(group)}[/]")
    if any(c.test is not None for group in board.groups for c in group.comparisons):
        console.print(f"not_different_from: {TEST_METHOD}.")
    if len(board.groups) > 1:
        console.print("[yellow]Groups were measured under different protocols and are not ranked together.[/]")
    if board.unranked:
        table = Table(title="Not ranked")
        table.add_column("run_dir")
        table.add_column("reason")
        for run, reason in board.unranked:
            table.add_row(str(run.path), reason)
        console.print(table)
    outputs = write_outputs(board, args.out or args.paths[0])
    console.print(f"wrote {', '.join(str(path) for path in outputs.values())}")
    if args.wandb:
        console.print(f"W&B run: {log_to_wandb(board, outputs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
