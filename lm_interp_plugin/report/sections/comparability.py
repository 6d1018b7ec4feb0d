"""Are the pair's explanations comparable? Per-model faithfulness (`report.comparability`) before the
attribution comparisons: a flagged task's attribution differences may reflect the explanation method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import render as R
from ..comparability import CLEAR_FACTOR, TaskComparability, compare_faithfulness
from . import Block, Figures, ReportContext, Section, register_section


@dataclass
class ComparabilityData:
    tasks: list[TaskComparability]

    def to_json(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.tasks]


@register_section
class Comparability(Section[ComparabilityData]):
    """Per task and tuned run: each faithfulness signal of both models; a flag when one is clearly worse."""

    # before the findings (20): whether the two models' attributions are comparably faithful is read before
    # any attribution is compared across them
    name, title, order = "comparability", "Are the two models' attributions comparably faithful?", 15

    def analyse(self, ctx: ReportContext) -> ComparabilityData | None:
        if not ctx.pair:
            return None
        runs, base = ctx.by_label, ctx.pair["base"]
        out = [
            compare_faithfulness(task, base, runs[base].tasks[task], tuned, runs[tuned].tasks[task])
            for tuned in ctx.pair["tuned"]
            for task in sorted(set(runs[base].tasks) & set(runs[tuned].tasks))
        ]
        return ComparabilityData(out) if out else None

    def blocks(self, data: ComparabilityData, figures: Figures) -> list[Block]:
        rows, absent, flagged = [], [], []
        for t in data.tasks:
            if t.absent:
                absent.append(f"{t.task} ({t.base} \u2192 {t.tuned}): {t.absent}")
            for row in t.rows:
                rows.append(
                    [
                        t.task,
                        row.metric,
                        "higher" if row.higher_is_better else "lower",
                        row.mean_base,
                        row.mean_tuned,
                        f"[{R.fmt(row.diff_ci_low)}, {R.fmt(row.diff_ci_high)}]",
                        row.n_pairs,
                        row.less_faithful or "\u2013",
                    ]
                )
                if row.less_faithful:
                    flagged.append(f"{t.task}: {row.reason}")
        blocks: list[Block] = [
            R.Paragraph(
                "Comparing where two models' attributions fall is fair only when both are about equally "
                "faithful. Deletion gain (attribution-ordered deletion against random orders; higher is more "
                "faithful) and integrated gradients' completeness error (lower is better) per model, on the "
                f"shared documents; a model is flagged clearly less faithful when the paired 95% bootstrap "
                f"interval of the difference excludes 0 and the gap exceeds a factor {CLEAR_FACTOR:g}."
            )
        ]
        if flagged:
            blocks.append(R.Notes(flagged, warning=True))
        if rows:
            blocks.append(
                R.Table(
                    [
                        "task",
                        "signal",
                        "better",
                        "base",
                        "tuned",
                        "tuned \u2212 base 95% CI",
                        "n",
                        "clearly less faithful",
                    ],
                    rows,
                    "Faithfulness per model",
                )
            )
        if absent:
            blocks.append(R.Notes(absent))
        return blocks
