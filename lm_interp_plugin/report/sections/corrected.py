"""Every base-vs-tuned paired test of the report, Holm-corrected as one family (`report.corrected`), with the
uncorrected p beside the corrected one and the bootstrap interval of each mean difference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import render as R
from ..corrected import CorrectedTest, corrected_tests
from ..findings import ALPHA
from . import Block, Figures, ReportContext, Section, register_section


@dataclass
class CorrectedData:
    base: str
    tests: list[CorrectedTest]

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "correction": "holm",
            "alpha": ALPHA,
            "tests": [t.to_dict() for t in self.tests],
        }


@register_section
class CorrectedTests(Section[CorrectedData]):
    """The pair's paired t-tests over every task and metric, corrected together."""

    name, title, order = "corrected_tests", "Base vs tuned: every paired test, Holm-corrected", 23

    def analyse(self, ctx: ReportContext) -> CorrectedData | None:
        if not ctx.pair:
            return None
        base = ctx.pair["base"]
        tests = [t for tuned in ctx.pair["tuned"] for t in corrected_tests(ctx.tasks, base, tuned)]
        return CorrectedData(base, tests) if tests else None

    def blocks(self, data: CorrectedData, figures: Figures) -> list[Block]:
        n = sum(t.p_value is not None for t in data.tests)
        significant = sum(t.significant for t in data.tests)
        rows = [
            [
                t.task,
                t.metric,
                f"finding {t.finding}" if t.finding else "",
                t.mean_diff,
                f"[{R.fmt(t.diff_ci_low)}, {R.fmt(t.diff_ci_high)}]",
                R.fmt_p(t.p_value),
                R.fmt_p(t.p_holm),
                "yes" if t.significant else "no",
                t.n_pairs,
            ]
            for t in data.tests
        ]
        return [
            R.Paragraph(
                f"The report runs {n} paired t-tests between {data.base} and its tuned run(s); read one by "
                f"one at p < {ALPHA}, some would pass by chance. Holm's step-down correction over all of "
                f"them controls the family-wise error rate: {significant} of {n} stay significant. The "
                "uncorrected p is beside the corrected one; the interval is the paired 95% bootstrap "
                "interval of the mean difference (tuned minus base). The findings' verdicts above read the "
                "corrected p."
            ),
            R.Table(
                ["task", "metric", "", "mean \u0394", "95% CI", "p", "p (Holm)", f"Holm p < {ALPHA}", "n"],
                rows,
                "Paired tests, corrected as one family",
            ),
        ]
