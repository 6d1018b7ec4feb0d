"""The paper's three findings, checked on the runs being compared: does each show up, with which evidence?

Wu et al. (NAACL 2024) found that instruction tuning (1) makes a model attribute its responses more to the
instruction words, (2) makes attention heads relate more to instructions, (3) rotates FFN knowledge toward
user tasks. Per task and per run against the baseline, each finding is read off a paired per-example metric:

1. ``instruction_importance`` goes up (the paper's own measure);
2. ``instruction_attention`` goes up (a per-example proxy: attention mass from the answer onto the
   instruction; the paper's Table 3 analysis of head word pairs is the global view);
3. ``ffn_concept_other`` goes down, i.e. more of the FFN activation falls on user-task concepts (a per-example
   proxy of the global rotation in Table 5).

The verdict is "shows up" only when the paired t-test gives p < `ALPHA` in the paper's direction; in a report
the p that decides is Holm-adjusted over every paired test of the pair (`report.corrected.with_holm`, which
re-decides each check), with the uncorrected p kept beside it. Finding 3
is "not measurable on this model" when a run's records leave the FFN concept shares out because no concept is
valid on its model (`explain.ffn_validity`); the reasons go into the row's explanation.

The findings are claims about instruction tuning, so they are checked only for runs declared to be a base
model and its instruction-tuned version (`declared_pairs`: ``--pair BASE:TUNED``, or runs labelled ``base``
and ``tuned``). Any other runs get a neutral comparison of the same metrics (`differences`): which run is
higher, with no verdict about tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lm_interp_plugin.metric_names import ATTRIBUTION_SHARE_PREFIX

from .. import metric_names as names
from .analysis import PairedComparison, TaskAnalysis
from .errors import ReportInputError

ALPHA = 0.05
NOT_MEASURABLE = "not measurable on this model"


def _direction(metric: str) -> int:
    """The paper's direction for tuning, from the metric table (`MetricSpec.higher_is_better`)."""
    spec = names.metric_spec(metric)
    if spec is None or spec.higher_is_better is None:
        raise ValueError(f"metric {metric!r} has no direction in metric_names.METRICS")
    return +1 if spec.higher_is_better else -1


FINDINGS: tuple[tuple[int, str, str, int], ...] = tuple(
    (number, claim, metric, _direction(metric))
    for number, claim, metric in (
        (1, "tuned models attribute their responses more to the instruction", names.INSTRUCTION_IMPORTANCE),
        (2, "tuned models attend more from the answer to the instruction", names.INSTRUCTION_ATTENTION),
        (3, "tuned FFN activation moves toward user-task concepts", names.FFN_CONCEPT_OTHER),
    )
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
    explanation: str = ""
    #: the paired 95% bootstrap interval of the mean difference (other minus baseline)
    diff_ci_low: float | None = None
    diff_ci_high: float | None = None
    #: p Holm-adjusted over every paired test of the pair in the report (`report.corrected.with_holm`); once
    #: set, it decides the verdict
    p_holm: float | None = None
    #: a neutral difference (`differences`: which run is higher), not a check of the paper's direction
    neutral: bool = False

    def decide(self, p_value: float | None) -> str:
        """The verdict on `p_value`: against the paper's direction (`verdict`), or neutral (`direction`)."""
        if self.neutral:
            return direction(self.mean_diff, p_value)
        return verdict(self.mean_diff, p_value, self.direction)

    def sentence(self) -> str:
        if self.verdict == NOT_MEASURABLE:  # no numbers to show; the reasons are in `explanation`
            return f"{self.finding}. {self.claim} [{self.task}, {self.metric}]: {self.verdict}"
        p = "n/a" if self.p_value is None else f"{self.p_value:.3g}"
        holm = "" if self.p_holm is None else f", Holm p={self.p_holm:.3g}"
        text = (
            f"{self.finding}. {self.claim} [{self.task}, {self.metric}]: {self.baseline} "
            f"{self.mean_baseline:.3f} -> {self.other} {self.mean_other:.3f} (paired t p={p}{holm}, "
            f"n={self.n_pairs}): {self.verdict}"
        )
        return f"{text} ({self.explanation})" if self.explanation else text


def verdict(diff: float, p_value: float | None, direction: int) -> str:
    """ "shows up", "opposite" (significant the other way), "not significant" or "untested" (no p-value)."""
    if p_value is None or math.isnan(p_value) or math.isnan(diff):
        return "untested"
    if p_value >= ALPHA or diff == 0:
        return "not significant"
    return "shows up" if diff * direction > 0 else "opposite"


def _row(task: TaskAnalysis, metric: str) -> list[PairedComparison]:
    return [row for row in task.paired if row.metric == metric]


def declared_pairs(
    labels: list[str], pairs: list[tuple[str, str]] | None, baseline: str | None
) -> tuple[str | None, list[str]]:
    """(base label, tuned labels) the findings apply to, or (None, []) when no such pair is declared.

    Declared means ``pairs`` given (every pair with the same base), or, without ``pairs``, runs labelled
    exactly ``base`` and ``tuned`` (compared with ``base`` as the baseline).

    Raises:
        ReportInputError: a pair names a label that is not a run, pairs with different bases, or a
            ``baseline`` other than the pairs' base.
    """
    if pairs:
        bases = {b for b, _ in pairs}
        unknown = [x for pair in pairs for x in pair if x not in labels]
        if unknown:
            raise ReportInputError(
                f"--pair names {unknown}, which are not run labels {labels}; use the labels (see --labels)"
            )
        if len(bases) != 1:
            raise ReportInputError(
                f"--pair gives several base runs {sorted(bases)}; the findings compare tuned runs against "
                "one base: give BASE:TUNED pairs with the same BASE"
            )
        base = bases.pop()
        if baseline is not None and baseline != base:
            raise ReportInputError(
                f"--baseline {baseline!r} differs from the base run of --pair ({base!r}); drop one of them"
            )
        return base, [t for _, t in pairs if t != base]
    if "base" in labels and "tuned" in labels and baseline in (None, "base"):
        return "base", ["tuned"]
    return None, []


def _not_measurable(
    task: TaskAnalysis, number: int, claim: str, metric: str, direction: int, base: str, others: list[str]
) -> list[FindingCheck]:
    """Finding 3's rows when the FFN concept shares are absent from a run's records (no valid concept)."""
    rows = []
    for other in others:
        # one phrase per (reason, concepts) shared by the runs: "base, tuned: writing, math absent (why)"
        grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for label in dict.fromkeys((base, other)):
            by_reason: dict[str, list[str]] = {}
            for concept, reason in task.ffn_concepts_absent.get(label, {}).items():
                by_reason.setdefault(reason, []).append(concept)
            for reason, concepts in by_reason.items():
                grouped.setdefault((reason, tuple(concepts)), []).append(label)
        reasons = [
            f"{', '.join(labels)}: {', '.join(concepts)} absent ({reason})"
            for (reason, concepts), labels in grouped.items()
        ]
        if not reasons:
            continue
        nan = math.nan
        rows.append(
            FindingCheck(
                number,
                claim,
                task.task,
                metric,
                direction,
                base,
                other,
                0,
                nan,
                nan,
                nan,
                None,
                NOT_MEASURABLE,
                "FFN concept labels are not valid on this model; " + "; ".join(reasons),
            )
        )
    return rows


def check_findings(
    tasks: list[TaskAnalysis], tuned: list[str] | None = None, baseline: str | None = None
) -> list[FindingCheck]:
    """Every finding whose metric the runs share, per task and per non-baseline run (only the `tuned` runs,
    when given); finding 3 "not measurable on this model" when its shares are absent for lack of valid
    concepts (needs `baseline`)."""
    checks = []
    for task in tasks:
        for number, claim, metric, direction in FINDINGS:
            if number == 3 and not _row(task, metric) and baseline is not None:
                others = tuned if tuned is not None else [r for r in task.runs if r != baseline]
                checks.extend(_not_measurable(task, number, claim, metric, direction, baseline, others))
            for row in _row(task, metric):
                if tuned is not None and row.other not in tuned:
                    continue
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
                        diff_ci_low=row.diff_ci_low,
                        diff_ci_high=row.diff_ci_high,
                    )
                )
                explain_missing_finding(checks[-1], task)
    return checks


def explain_missing_finding(check: FindingCheck, task: TaskAnalysis) -> None:
    """A finding-1 check that does not show up ("opposite" or "not significant") says where the other run's
    attribution went (`where_attribution_went`), added to its explanation once; other checks are left as
    they are. Called when a verdict is decided, and again when Holm's correction re-decides it."""
    if check.finding != 1 or check.neutral or check.verdict not in ("opposite", "not significant"):
        return
    where = where_attribution_went(task, check.other)
    if where and where not in check.explanation:
        check.explanation = ". ".join(text for text in (check.explanation, where) if text)


def where_attribution_went(task: TaskAnalysis, other: str, top: int = 3) -> str:
    """Where the other run's attribution sits instead of the instruction: its largest mean
    ``attribution_share_<part>`` values against the baseline's, from the same paired rows."""
    rows = [
        p
        for p in task.paired
        if p.other == other and p.metric.startswith(ATTRIBUTION_SHARE_PREFIX) and math.isfinite(p.mean_other)
    ]
    if not rows:
        return ""
    rows.sort(key=lambda p: (-round(p.mean_other, 2), p.metric))  # as printed, then by name: no float noise
    parts = ", ".join(
        f"{p.metric[len(ATTRIBUTION_SHARE_PREFIX) :]} {p.mean_other:.2f} (baseline {p.mean_baseline:.2f})"
        for p in rows[:top]
    )
    return f"{other}'s attribution mass by prompt part: {parts}"


def direction(diff: float, p_value: float | None) -> str:
    """A neutral reading of a paired difference: which run is higher, or no significant difference."""
    if p_value is None or math.isnan(p_value) or math.isnan(diff):
        return "untested"
    if p_value >= ALPHA or diff == 0:
        return "no significant difference"
    return "higher in the other run" if diff > 0 else "lower in the other run"


def differences(tasks: list[TaskAnalysis]) -> list[FindingCheck]:
    """The same rows as `check_findings`, for runs not declared base and tuned: the verdict is `direction`."""
    rows = check_findings(tasks)
    for row in rows:
        row.neutral = True
        row.verdict = row.decide(row.p_value)
        row.claim = f"{row.metric} differs between the runs"
        row.explanation = ""
    return rows
