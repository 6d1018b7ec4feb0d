"""Every base-vs-tuned test of a report, Holm-corrected as one family.

A report of a declared pair runs a paired t-test per task and metric (the paper's findings are three of
them, the new shift metrics more); read one by one at alpha = 0.05, some pass by chance. This collects all of
them (the pair's `PairedComparison` rows over every task), corrects their p-values together with Holm's
step-down method (`methods.multiple_testing.holm`: the family-wise error rate, no independence assumed), and
keeps beside each the uncorrected p and the paired 95% bootstrap interval of the mean difference.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..methods.multiple_testing import holm
from .analysis import TaskAnalysis
from .findings import ALPHA, FINDINGS, NOT_MEASURABLE, FindingCheck, explain_missing_finding


@dataclass
class CorrectedTest:
    """One paired test of the family (tuned minus base)."""

    task: str
    metric: str
    n_pairs: int
    mean_diff: float
    diff_ci_low: float
    diff_ci_high: float
    p_value: float | None
    p_holm: float | None
    finding: int | None

    @property
    def significant(self) -> bool:
        """Significant after the correction (Holm-adjusted p < `ALPHA`)."""
        return self.p_holm is not None and self.p_holm < ALPHA

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant_holm": self.significant}


def corrected_tests(tasks: list[TaskAnalysis], base: str, tuned: str) -> list[CorrectedTest]:
    """The pair's paired t-tests over all tasks, with Holm-adjusted p-values (untested rows stay None)."""
    finding_of = {metric: number for number, _, metric, _ in FINDINGS}
    rows = [row for task in tasks for row in task.paired if row.baseline == base and row.other == tuned]
    raw = []
    for row in rows:
        p = row.paired_t.get("p_value")
        raw.append(float(p) if isinstance(p, (int, float)) and math.isfinite(p) else math.nan)
    adjusted = holm(raw)
    return [
        CorrectedTest(
            row.task,
            row.metric,
            row.n_pairs,
            row.mean_diff,
            row.diff_ci_low,
            row.diff_ci_high,
            None if math.isnan(p) else p,
            None if math.isnan(a) else a,
            finding_of.get(row.metric.split(",", 1)[0]),
        )
        for row, p, a in zip(rows, raw, adjusted)
    ]


def with_holm(checks: list[FindingCheck], tasks: list[TaskAnalysis]) -> list[FindingCheck]:
    """Each check's Holm-adjusted p from its pair's family (`corrected_tests` of its baseline and other run:
    the same family and numbers as the report's corrected-tests section), and its verdict decided again on
    that p, in place; returns `checks`.

    Holm's p is never below the uncorrected one, so a verdict can only turn "not significant" (or "no
    significant difference"); a finding-1 check that does gets the per-part explanation the uncorrected
    "not significant" ones have (`findings.explain_missing_finding`)."""
    families: dict[tuple[str, str], dict[tuple[str, str], float | None]] = {}
    by_task = {task.task: task for task in tasks}
    for check in checks:
        pair = (check.baseline, check.other)
        if pair not in families:
            families[pair] = {(t.task, t.metric): t.p_holm for t in corrected_tests(tasks, *pair)}
        check.p_holm = families[pair].get((check.task, check.metric))
        if check.verdict == NOT_MEASURABLE or check.p_holm is None:  # no p: "untested" either way
            continue
        check.verdict = check.decide(check.p_holm)
        explain_missing_finding(check, by_task[check.task])
    return checks
