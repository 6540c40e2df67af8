"""Run records as the leaderboard reads them: ``metrics.json`` (+ ``metrics.jsonl``) in each run dir.

A record says what was measured (``best``/``final`` per metric), under which protocol (``fid_protocol``), and
which arm the run belongs to: ``arm`` fingerprints the run's config without its seed, so runs that differ
only in ``seed`` share it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..metric_registry import sample_quality_metrics
from ..run_record import SUMMARY_FILE, read_history

PROTOCOL_FIELDS = (
    "num_samples",
    "num_evals",
    "sample_seeds",
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
    "dinov2_weights_sha256",
    "torch_fidelity_version",
    "resize",
)


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

    @property
    def code_version(self) -> str:
        """The ddpm-lab version (and git commit) that wrote the record; "unrecorded" for older records."""
        return str((self.summary.get("code") or {}).get("version") or "unrecorded")

    @property
    def seed(self) -> Any:
        return self.summary.get("seed")

    @property
    def arm(self) -> str:
        """Runs with the same arm differ in seed only. A record without one (written before arms existed)
        is an arm of its own."""
        return str(self.summary.get("arm") or self.path)

    def value_at_same_step(self, metric: str, companion: str, which: str) -> float | None:
        """``companion``'s value logged with the ``which`` value of ``metric`` (e.g. the bootstrap interval of
        the best FID, not the lowest interval bound ever logged)."""
        if which == "final":
            return self.value(companion, "final")
        entry = (self.summary.get("best") or {}).get(metric)
        step = entry.get("step") if isinstance(entry, dict) else None
        for row in reversed(read_history(self.path)):
            if row.get("step") == step and companion in row and isinstance(row[companion], int | float):
                return float(row[companion])
        return None

    def protocol(self, metric: str) -> tuple[tuple[str, Any], ...]:
        if metric not in sample_quality_metrics():  # only these are measured under fid_protocol
            return ()
        protocol = self.summary.get("fid_protocol") or {}
        # A run may declare protocol fields that are its subject, not its yardstick: ddpm-eval's sampler and
        # steps are what a sampler sweep compares, while sample count, reference and extractor must still match.
        subject = set(self.summary.get("protocol_subject") or ())
        return tuple((k, protocol.get(k)) for k in PROTOCOL_FIELDS if k not in subject)


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
