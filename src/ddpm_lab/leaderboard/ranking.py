"""Rank arms (runs that differ only in seed) by a metric, within groups of one measurement protocol.

Runs are only compared with runs measured under the same protocol: FID-type metrics from different sample
counts, reference splits, sampler steps, EMA/raw weights or extractors form separate groups. Within a group,
an arm's value is the mean over its seeds with a t-interval, and every pair of arms with at least two seeds
each is tested (Welch, Holm-adjusted): arms whose difference is not significant are marked, so a table
never presents seed noise as a ranking. Runs that failed, are still running, or lack the metric are listed
apart with the reason, never silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..metric_registry import require_direction
from ..stats import ALPHA, Summary, WelchResult, holm_adjust, summarize, welch_test
from .records import Run


@dataclass
class Arm:
    """The runs of one configuration (all seeds), their values of the ranked metric and its summary."""

    runs: list[Run]
    values: list[float]
    summary: Summary
    rank: int = 0
    # ranks of the arms of this group whose difference from this one is not significant (Holm-adjusted Welch)
    indistinguishable_from: list[int] = field(default_factory=list)

    @property
    def choices(self) -> dict[str, Any]:
        return self.runs[0].choices

    @property
    def seeds(self) -> list[Any]:
        return [run.seed for run in self.runs]

    @property
    def duplicate_seeds(self) -> list[Any]:
        """Seeds that occur more than once (a rerun is not an independent sample: the spread is understated)."""
        seeds = [s for s in self.seeds if s is not None]
        return sorted({s for s in seeds if seeds.count(s) > 1}, key=str)


@dataclass
class Comparison:
    """One pair of arms of a group (by rank): Welch's test, or None where an arm has fewer than 2 seeds."""

    first: int
    second: int
    test: WelchResult | None
    p_adjusted: float | None

    @property
    def significant(self) -> bool | None:
        return None if self.p_adjusted is None else self.p_adjusted < ALPHA


@dataclass
class Group:
    protocol: dict[str, Any]
    arms: list[Arm]
    comparisons: list[Comparison]

    @property
    def runs(self) -> list[Run]:
        return [run for arm in self.arms for run in arm.runs]

    @property
    def code_versions(self) -> list[str]:
        """The code versions behind this group's runs: more than one is worth a warning (not a refusal),
        since a code change can move the numbers on its own."""
        return sorted({run.code_version for run in self.runs})


@dataclass
class Leaderboard:
    metric: str
    which: str
    ascending: bool
    groups: list[Group]
    unranked: list[tuple[Run, str]]
    choice_columns: list[str]
    runs: list[Run] = field(default_factory=list)
    # "overrides" joins choice_columns when two arms have equal group choices but different configs
    show_overrides: bool = False


def compare_arms(arms: list[Arm]) -> list[Comparison]:
    """Welch's test for every pair of arms with >= 2 seeds each, Holm-adjusted over the tested pairs, and
    each arm's ``indistinguishable_from`` filled in."""
    comparisons = [
        Comparison(a.rank, b.rank, welch_test(a.values, b.values), None)
        for i, a in enumerate(arms)
        for b in arms[i + 1 :]
    ]
    tested = [c for c in comparisons if c.test is not None]
    for comparison, adjusted in zip(tested, holm_adjust([c.test.p_value for c in tested]), strict=True):
        comparison.p_adjusted = adjusted
    by_rank = {arm.rank: arm for arm in arms}
    for c in tested:
        if not c.significant:
            by_rank[c.first].indistinguishable_from.append(c.second)
            by_rank[c.second].indistinguishable_from.append(c.first)
    for arm in arms:
        arm.indistinguishable_from.sort()
    return comparisons


def build_leaderboard(
    runs: list[Run], metric: str = "val/fid", which: str = "best", ascending: bool | None = None, top: int | None = None
) -> Leaderboard:
    """Group ranked runs by protocol, then by arm; rank the arms of each group by their mean over seeds."""
    if which not in ("best", "final"):
        raise ValueError(f"which={which!r}: use best or final")
    ascending = require_direction(metric) == "lower" if ascending is None else ascending
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
    by_protocol: dict[tuple, dict[str, list[Run]]] = {}
    for run in ranked:
        by_protocol.setdefault(run.protocol(metric), {}).setdefault(run.arm, []).append(run)
    groups, show_overrides = [], False
    for protocol, by_arm in by_protocol.items():
        arms = []
        for members in by_arm.values():
            members.sort(key=lambda r: (str(r.seed), str(r.path)))
            values = [run.value(metric, which) for run in members]
            arms.append(Arm(members, values, summarize(values)))
        arms.sort(key=lambda a: a.summary.mean, reverse=not ascending)
        for rank, arm in enumerate(arms, start=1):
            arm.rank = rank
        comparisons = compare_arms(arms)
        if top:
            arms = arms[:top]
            comparisons = [c for c in comparisons if c.first <= top and c.second <= top]
        choice_sets = [json.dumps(arm.choices, sort_keys=True) for arm in arms]
        show_overrides |= len(set(choice_sets)) < len(choice_sets)
        groups.append(Group(dict(protocol), arms, comparisons))
    groups.sort(key=lambda g: -len(g.runs))
    return Leaderboard(metric, which, ascending, groups, unranked, choice_columns, runs, show_overrides)
