"""The run record's format: every value logged, as JSON lines in the run dir (``metrics.jsonl``), plus a
``metrics.json`` summary (status, choices, protocol, final and best values). It is the source of truth for the
leaderboard (W&B offline runs are binary). Pure Python, so that the offline leaderboard needs no Lightning;
``lightning.metrics_record.MetricsRecordLogger`` writes it during training."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .atomic_files import write_text_atomically
from .metric_registry import direction, is_better

HISTORY_FILE = "metrics.jsonl"
SUMMARY_FILE = "metrics.json"


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / HISTORY_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write
    return rows


def truncate_history(run_dir: str | Path, step: int) -> int:
    """Drop the rows a resume from a checkpoint after ``step`` optimizer steps discards, so that their values
    do not stay in the record (``best`` could come from them). A training row is logged under the step count
    before its own update, so the batches the checkpoint holds log steps < ``step``: training rows at
    ``step`` or later are dropped; validation rows (logged after the update) only after ``step``.
    Returns the number of rows dropped."""
    path = Path(run_dir) / HISTORY_FILE
    rows = read_history(run_dir)

    def stands(row: dict[str, Any]) -> bool:
        logged = row.get("step")
        if not isinstance(logged, int):
            return True
        validation = any(str(key).startswith(("val/", "test/")) for key in row)
        return logged <= step if validation else logged < step

    kept = [row for row in rows if stands(row)]
    if len(kept) < len(rows):
        write_text_atomically(path, "".join(json.dumps(row) + "\n" for row in kept))
    return len(rows) - len(kept)


def summarize_history(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: the final value, and for a metric with a direction (``metric_registry``) the best value and
    the step it was reached at."""
    final, best = {}, {}
    for row in rows:
        step = row.get("step")
        for key, value in row.items():
            if key in ("step", "time") or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            final[key] = value
            if direction(key) is not None and (key not in best or is_better(key, value, best[key]["value"])):
                best[key] = {"value": value, "step": step}
    return {"final": final, "best": best}


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_summary(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into metrics.json together with the summary of the history so far."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = read_summary(run_dir) or {}
    summary.update(fields)
    summary.update(summarize_history(read_history(run_dir)))
    write_text_atomically(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return summary
