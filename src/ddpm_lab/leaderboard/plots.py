"""The leaderboard's pictures: each arm's mean with its 95% interval and per-seed points (arms.png), the
metric against training step per run (leaderboard.png), and against NFE per sampler (metric_vs_nfe.png)."""

from __future__ import annotations

from pathlib import Path

from ..figures import figure
from ..run_record import read_history
from .ranking import Leaderboard
from .tables import arm_label, eval_interval


def plot_arms(board: Leaderboard, path: Path) -> None:
    """One horizontal bar per arm (best first, per group): the mean, the t-interval over seeds as an error
    bar (a 1-seed arm: the FID bootstrap interval, dashed, where recorded) and each seed as a dot."""
    arms = [(g, arm) for g, group in enumerate(board.groups, start=1) for arm in group.arms]
    fig, ax = figure(figsize=(8, 1.2 + 0.45 * max(1, len(arms))), dpi=100)
    for y, (_, arm) in enumerate(arms):
        s = arm.summary
        ax.scatter(arm.values, [y] * len(arm.values), s=14, color="0.4", zorder=3)
        if s.ci_low is not None:
            ax.errorbar(s.mean, y, xerr=[[s.mean - s.ci_low], [s.ci_high - s.mean]], fmt="o", capsize=4, color="C0")
        else:
            interval = eval_interval(board, arm)
            if interval is not None:
                ax.hlines(y, *interval, colors="C1", linestyles="dashed")
            ax.plot(s.mean, y, "o", color="C1" if interval else "C0")
    ax.set_yticks(range(len(arms)))
    labels = [f"g{g} #{arm.rank}: {arm_label(board, arm)} (n={arm.summary.n})" for g, arm in arms]
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel=f"{board.which} {board.metric}", title=f"{board.metric} per arm: mean and 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path)


def plot_against_step(board: Leaderboard, path: Path) -> None:
    fig, ax = figure(figsize=(8, 5), dpi=100)
    longest = 0
    for group in board.groups:
        for arm in group.arms:
            for run in arm.runs:
                points = [(row["step"], row[board.metric]) for row in read_history(run.path) if board.metric in row]
                longest = max(longest, len(points))
                if points:
                    label = arm_label(board, arm) + (f", seed={run.seed}" if arm.summary.n > 1 else "")
                    ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set(xlabel="training step", ylabel=board.metric, title=f"{board.metric} against training step")
    if longest == 1:  # every run measured once: a curve needs several evaluations (metrics.*.every_n_steps)
        note = "each run was measured once: no curve to draw (arms.png compares the arms)"
        ax.text(0.5, 0.95, note, transform=ax.transAxes, ha="center", va="top", fontsize=9)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def metric_against_nfe(board: Leaderboard) -> dict[str, list[tuple[int, float]]]:
    """The arms' mean metric per sampler, as (NFE, value) sorted by NFE: one curve per sampler (and per
    value of any other varying choice but steps/NFE, which the curve runs along)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    others = [c for c in board.choice_columns if c not in ("nfe", "steps")]
    for group in board.groups:
        for arm in group.arms:
            nfe = arm.choices.get("nfe")
            if isinstance(nfe, int):
                label = ", ".join(f"{c}={arm.choices.get(c)}" for c in others) or "runs"
                curves.setdefault(label, []).append((nfe, arm.summary.mean))
    return {label: sorted(points) for label, points in curves.items()}


def plot_against_nfe(board: Leaderboard, path: Path) -> None:
    fig, ax = figure(figsize=(7, 4.5), dpi=100)
    for label, points in metric_against_nfe(board).items():
        ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set(xscale="log", xlabel="network evaluations (NFE)", ylabel=board.metric, title=f"{board.metric} against NFE")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
