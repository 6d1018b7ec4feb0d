"""The paper's three findings for a declared base/tuned pair (`findings`), else a neutral comparison of the
same metrics (`differences`): two sections, one of which is empty on any set of runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .. import render as R
from ..findings import ALPHA, FindingCheck, check_findings, differences
from . import Block, Figures, ReportContext, Section, register_section

_HEADERS = ["finding", "task", "metric", "runs", "baseline", "other", "diff", "p (paired t)", "n"]


@dataclass
class FindingsData:
    checks: list[FindingCheck]
    pair: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.checks]


def _rows(checks: list[FindingCheck], with_explanation: bool) -> list[list[Any]]:
    rows = []
    for f in checks:
        row: list[Any] = [
            f.finding,
            f.task,
            f.metric,
            f"{f.baseline} \u2192 {f.other}",
            f.mean_baseline,
            f.mean_other,
            f.mean_diff,
            f.p_value,
            f.n_pairs,
            f.verdict,
        ]
        if with_explanation:
            row.append(f.explanation or "")
        rows.append(row)
    return rows


@register_section
class Findings(Section[FindingsData]):
    """Wu et al.'s findings, each a paired test per task, for runs declared a base model and its tuned
    version."""

    name, title, order = "findings", "The paper's findings on these runs", 20

    def analyse(self, ctx: ReportContext) -> FindingsData:
        checks = check_findings(ctx.tasks, tuned=ctx.pair["tuned"]) if ctx.pair else []
        return FindingsData(checks, dict(ctx.pair))

    def blocks(self, data: FindingsData, figures: Figures) -> list[Block]:
        if not data.checks:
            return []
        base, tuned = data.pair["base"], ", ".join(data.pair["tuned"])
        return [
            R.Paragraph(
                f"{base} is the base model and {tuned} its instruction-tuned version ({data.pair['how']}). "
                "Wu et al. (NAACL 2024): instruction tuning (1) raises attribution to the instruction, (2) "
                "makes heads attend more to it, (3) moves FFN knowledge toward user tasks. Each row is a "
                f"paired test on the shared examples; 'shows up' needs p < {ALPHA} in the paper's direction, "
                "'opposite' is significant the other way. Findings 2 and 3 are per-example proxies (the "
                "global Table 3 / Table 5 views are below when given)."
            ),
            R.Table(
                _HEADERS + ["verdict", "where the attribution went instead"],
                _rows(data.checks, with_explanation=True),
                "Paper findings check",
            ),
        ]


@register_section
class Differences(Section[FindingsData]):
    """The same metrics for runs that are not a declared base/tuned pair: which run is higher, no verdict."""

    name, title, order = "differences", "Differences on the paper's metrics", 21

    def analyse(self, ctx: ReportContext) -> FindingsData:
        return FindingsData([] if ctx.pair else differences(ctx.tasks))

    def blocks(self, data: FindingsData, figures: Figures) -> list[Block]:
        if not data.checks:
            return []
        return [
            R.Paragraph(
                "These runs are not declared as a base model and its instruction-tuned version, so the "
                "paper's findings about instruction tuning are not claimed here; the table only says which "
                "run is higher (paired t-test, p < 0.05). Declare a pair with `--pair BASE:TUNED` (or label "
                "the runs base and tuned) to check the findings."
            ),
            R.Table(
                _HEADERS + ["reading"],
                _rows(data.checks, with_explanation=False),
                "Paired differences (other run minus baseline)",
            ),
        ]
