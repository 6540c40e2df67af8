"""Collect run records (``metrics.json`` + ``metrics.jsonl`` in each run dir) and rank them by a metric.

Runs are only ranked against runs measured under the same protocol: FID-type metrics from different sample
counts, reference splits, sampler steps, EMA/raw weights or extractors form separate groups. Runs that failed,
are still running, or lack the metric are listed apart with the reason, never silently dropped.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .lightning.metrics_record import SUMMARY_FILE, lower_is_better, read_history

PROTOCOL_FIELDS = (
    "num_samples",
    "reference",
    "reference_num_images",
    "resolution",
    "sampler",
    "sampler_steps",
    "eta",
    "spacing",
    "conditional",
    "guidance_scale",
    "weights",
    "feature_extractor",
    "inception_weights_sha256",
    "torch_fidelity_version",
    "resize",
)
FID_METRICS = ("val/fid", "val/kid_mean", "val/kid_std", "val/is", "val/is_std")
SHOWN_METRICS = ("val/fid", "val/kid_mean", "val/is", "val/nll_bpd", "val/sample_distance", "val/loss")


@dataclass
class Run:
    path: Path
    summary: dict[str, Any]

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    @property
    def choices(self) -> dict[str, Any]:
        return self.summary.get("choices") or {}

    def value(self, metric: str, which: str) -> float | None:
        entry = (self.summary.get(which) or {}).get(metric)
        value = entry.get("value") if isinstance(entry, dict) else entry
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None

    def protocol(self, metric: str) -> tuple[tuple[str, Any], ...]:
        if metric not in FID_METRICS:
            return ()
        protocol = self.summary.get("fid_protocol") or {}
        # A run may declare protocol fields that are its subject, not its yardstick: ddpm-eval's sampler and
        # steps are what a sampler sweep compares, while sample count, reference and extractor must still match.
        subject = set(self.summary.get("protocol_subject") or ())
        return tuple((k, protocol.get(k)) for k in PROTOCOL_FIELDS if k not in subject)


@dataclass
class Leaderboard:
    metric: str
    which: str
    ascending: bool
    groups: list[tuple[dict[str, Any], list[Run]]]
    unranked: list[tuple[Run, str]]
    choice_columns: list[str]
    runs: list[Run] = field(default_factory=list)


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Every run dir under ``paths``: dirs with a metrics.json, plus Hydra job dirs that never wrote one."""
    runs, seen = [], set()
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        candidates = {p.parent for p in root.rglob(SUMMARY_FILE)} | {
            p.parent.parent for p in root.rglob(".hydra/config.yaml")
        }
        if (root / SUMMARY_FILE).exists():
            candidates.add(root)
        for run_dir in sorted(candidates):
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            try:
                summary = json.loads((run_dir / SUMMARY_FILE).read_text())
            except (FileNotFoundError, ValueError):  # missing, not JSON, or not text at all
                summary = {"status": "no record", "error": f"no readable {SUMMARY_FILE}"}
            if not isinstance(summary, dict):
                summary = {"status": "no record", "error": f"{SUMMARY_FILE} is not a JSON object"}
            runs.append(Run(run_dir, summary))
    return runs


def build_leaderboard(
    runs: list[Run], metric: str = "val/fid", which: str = "best", ascending: bool | None = None, top: int | None = None
) -> Leaderboard:
    if which not in ("best", "final"):
        raise ValueError(f"which={which!r}: use best or final")
    ascending = lower_is_better(metric) if ascending is None else ascending
    ranked, unranked = [], []
    for run in runs:
        if run.status != "completed":
            unranked.append((run, f"{run.status}: {run.summary.get('error') or 'no error message'}"))
        elif run.value(metric, which) is None:
            unranked.append((run, f"no {metric} recorded"))
        else:
            ranked.append(run)
    keys = sorted({k for run in runs for k in run.choices})
    choice_columns = [k for k in keys if len({json.dumps(run.choices.get(k)) for run in runs}) > 1]
    by_protocol: dict[tuple, list[Run]] = {}
    for run in ranked:
        by_protocol.setdefault(run.protocol(metric), []).append(run)
    groups = []
    for protocol, members in by_protocol.items():
        members.sort(key=lambda r: r.value(metric, which), reverse=not ascending)
        groups.append((dict(protocol), members[:top] if top else members))
    groups.sort(key=lambda g: -len(g[1]))
    return Leaderboard(metric, which, ascending, groups, unranked, choice_columns, runs)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def table_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per ranked run, all groups) for CSV/Markdown."""
    shown = [
        m
        for m in SHOWN_METRICS
        if m != board.metric and any(r.value(m, "final") is not None for _, rs in board.groups for r in rs)
    ]
    header = [
        "group",
        "rank",
        *board.choice_columns,
        f"{board.which} {board.metric}",
        "step",
        *shown,
        "global_step",
        "wall_time_s",
        "run_dir",
    ]
    rows = []
    for g, (_, members) in enumerate(board.groups, start=1):
        for rank, run in enumerate(members, start=1):
            best = (run.summary.get(board.which) or {}).get(board.metric)
            step = best.get("step") if isinstance(best, dict) else None
            rows.append(
                [
                    str(g),
                    str(rank),
                    *(_fmt(run.choices.get(c)) for c in board.choice_columns),
                    _fmt(run.value(board.metric, board.which)),
                    _fmt(step),
                    *(_fmt(run.value(m, "final")) for m in shown),
                    _fmt(run.summary.get("global_step")),
                    _fmt(run.summary.get("wall_time_s")),
                    str(run.path),
                ]
            )
    return header, rows


def write_outputs(board: Leaderboard, out_dir: str | Path) -> dict[str, Path]:
    """leaderboard.md, leaderboard.csv and leaderboard.png (metric against training step, one line per run);
    for runs that differ in sampler and NFE (``ddpm-eval -m +ablation=sampler_nfe``) also metric_vs_nfe.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(board)
    with open(out / "leaderboard.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    lines = [f"# Leaderboard: {board.which} {board.metric} ({'lower' if board.ascending else 'higher'} is better)", ""]
    for g, (protocol, _) in enumerate(board.groups, start=1):
        described = ", ".join(f"{k}={v}" for k, v in protocol.items() if v is not None) or "no protocol fields"
        lines += [
            f"## Group {g}: {described}",
            "",
            "| " + " | ".join(header[1:]) + " |",
            "|" + "---|" * (len(header) - 1),
        ]
        lines += ["| " + " | ".join(row[1:]) + " |" for row in rows if row[0] == str(g)]
        lines.append("")
    if len(board.groups) > 1:
        lines.insert(2, "Groups were measured under different protocols and are not comparable with each other.\n")
    if board.unranked:
        lines += ["## Not ranked", "", "| run_dir | reason |", "|---|---|"]
        lines += [f"| {run.path} | {reason} |" for run, reason in board.unranked]
    (out / "leaderboard.md").write_text("\n".join(lines) + "\n")
    _plot(board, out / "leaderboard.png")
    outputs = {"md": out / "leaderboard.md", "csv": out / "leaderboard.csv", "png": out / "leaderboard.png"}
    if "nfe" in board.choice_columns:
        outputs["nfe_png"] = out / "metric_vs_nfe.png"
        _plot_against_nfe(board, outputs["nfe_png"])
    return outputs


def metric_against_nfe(board: Leaderboard) -> dict[str, list[tuple[int, float]]]:
    """The ranked runs' metric per sampler, as (NFE, value) sorted by NFE: one curve per sampler (and per
    value of any other varying choice but steps/NFE, which the curve runs along)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    others = [c for c in board.choice_columns if c not in ("nfe", "steps")]
    for _, members in board.groups:
        for run in members:
            nfe = run.choices.get("nfe")
            if isinstance(nfe, int):
                label = ", ".join(f"{c}={run.choices.get(c)}" for c in others) or "runs"
                curves.setdefault(label, []).append((nfe, run.value(board.metric, board.which)))
    return {label: sorted(points) for label, points in curves.items()}


def _plot_against_nfe(board: Leaderboard, path: Path) -> None:
    from .visualize import figure

    fig, ax = figure(figsize=(7, 4.5), dpi=100)
    for label, points in metric_against_nfe(board).items():
        ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set(xscale="log", xlabel="network evaluations (NFE)", ylabel=board.metric, title=f"{board.metric} against NFE")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def _plot(board: Leaderboard, path: Path) -> None:
    from .visualize import figure

    fig, ax = figure(figsize=(8, 5), dpi=100)
    for _, members in board.groups:
        for run in members:
            points = [(row["step"], row[board.metric]) for row in read_history(run.path) if board.metric in row]
            if points:
                label = ", ".join(f"{c}={run.choices.get(c)}" for c in board.choice_columns) or run.path.name
                ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set(xlabel="training step", ylabel=board.metric, title=f"{board.metric} against training step")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
