"""The paper's three findings, checked on the runs being compared: does each show up, with which evidence?

Wu et al. (NAACL 2024) found that instruction tuning (1) makes a model attribute its responses more to the
instruction words, (2) makes attention heads relate more to instructions, (3) rotates FFN knowledge toward
user tasks. Per task and per run against the baseline, each finding is read off a paired per-example metric:

1. ``instruction_importance`` goes up (the paper's own measure);
2. ``instruction_attention`` goes up (a per-example proxy: attention mass from the answer onto the
   instruction; the paper's Table 3 analysis of head word pairs is the global view);
3. ``ffn_concept_other`` goes down, i.e. more of the FFN activation falls on user-task concepts (a per-example
   proxy of the global rotation in Table 5).

The verdict is "shows up" only when the paired t-test gives p < `ALPHA` in the paper's direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import metric_names as names
from .analysis import PairedComparison, TaskAnalysis

ALPHA = 0.05

FINDINGS: tuple[tuple[int, str, str, int], ...] = (
    (1, "tuned models attribute their responses more to the instruction", names.INSTRUCTION_IMPORTANCE, +1),
    (2, "tuned models attend more from the answer to the instruction", names.INSTRUCTION_ATTENTION, +1),
    (3, "tuned FFN activation moves toward user-task concepts", names.FFN_CONCEPT_OTHER, -1),
)


@dataclass
class FindingCheck:
    """One finding on one task for one run against the baseline."""

    finding: int
    claim: str
    task: str
    metric: str
    direction: int
    baseline: str
    other: str
    n_pairs: int
    mean_baseline: float
    mean_other: float
    mean_diff: float
    p_value: float | None
    verdict: str

    def sentence(self) -> str:
        p = "n/a" if self.p_value is None else f"{self.p_value:.3g}"
        return (
            f"{self.finding}. {self.claim} [{self.task}, {self.metric}]: {self.baseline} "
            f"{self.mean_baseline:.3f} -> {self.other} {self.mean_other:.3f} (paired t p={p}, "
            f"n={self.n_pairs}): {self.verdict}"
        )


def verdict(diff: float, p_value: float | None, direction: int) -> str:
    """ "shows up", "opposite" (significant the other way), "not significant" or "untested" (no p-value)."""
    if p_value is None or math.isnan(p_value) or math.isnan(diff):
        return "untested"
    if p_value >= ALPHA or diff == 0:
        return "not significant"
    return "shows up" if diff * direction > 0 else "opposite"


def _row(task: TaskAnalysis, metric: str) -> list[PairedComparison]:
    return [row for row in task.paired if row.metric == metric]


def check_findings(tasks: list[TaskAnalysis]) -> list[FindingCheck]:
    """Every finding whose metric the runs share, per task and per non-baseline run."""
    checks = []
    for task in tasks:
        for number, claim, metric, direction in FINDINGS:
            for row in _row(task, metric):
                p = (row.paired_t or {}).get("p_value")
                p = None if p is None or (isinstance(p, float) and math.isnan(p)) else float(p)
                checks.append(
                    FindingCheck(
                        finding=number,
                        claim=claim,
                        task=task.task,
                        metric=metric,
                        direction=direction,
                        baseline=row.baseline,
                        other=row.other,
                        n_pairs=row.n_pairs,
                        mean_baseline=row.mean_baseline,
                        mean_other=row.mean_other,
                        mean_diff=row.mean_diff,
                        p_value=p,
                        verdict=verdict(row.mean_diff, p, direction),
                    )
                )
    return checks
