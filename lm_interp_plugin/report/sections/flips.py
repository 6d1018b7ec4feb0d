"""Answers that flip between a declared base/tuned pair (`report.flips`): per task, the counts of the four
correctness cells, the mean change per flip direction, and every flipped item in a searchable table that links
to the item's token view (where the tasks section drew one)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .. import render as R
from ..flips import RIGHT_TO_WRONG, WRONG_TO_RIGHT, TaskFlips, task_flips
from . import Block, Figures, ReportContext, Section, _slug, register_section
from .tasks import _anchor, example_views


@dataclass
class FlipsData:
    tasks: list[TaskFlips]
    links: dict[str, dict[str, str]] = field(default_factory=dict)  # task/tuned -> item key -> anchor

    def to_json(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.tasks]


def _links(ctx: ReportContext, task_name: str, tuned: str) -> dict[str, str]:
    """The anchors of the token views the tasks section draws for this task and run (same choice)."""
    analysis = next((t for t in ctx.tasks if t.task == task_name), None)
    if analysis is None or ctx.baseline != ctx.pair.get("base"):
        return {}
    views = next(
        (v for v in example_views(analysis, ctx.by_label, ctx.baseline, 0) if v.other == tuned), None
    )
    if views is None:
        return {}
    return {s.key: _anchor(task_name, tuned, s) for s in views.ranked if s.key in views.viewed}


@register_section
class Flips(Section[FlipsData]):
    """Items that go wrong -> right and right -> wrong from the base to each tuned run."""

    name, title, order = "flips", "Answers that flip between base and tuned", 45

    def analyse(self, ctx: ReportContext) -> FlipsData | None:
        if not ctx.pair:
            return None
        runs, base = ctx.by_label, ctx.pair["base"]
        out = FlipsData([])
        for tuned in ctx.pair["tuned"]:
            for task in sorted(set(runs[base].tasks) & set(runs[tuned].tasks)):
                flips = task_flips(task, base, runs[base].tasks[task], tuned, runs[tuned].tasks[task])
                if flips is not None:
                    out.tasks.append(flips)
                    out.links[f"{task}/{tuned}"] = _links(ctx, task, tuned)
        return out if out.tasks else None

    def blocks(self, data: FlipsData, figures: Figures) -> list[Block]:
        blocks: list[Block] = [
            R.Paragraph(
                "Mechanisms are enhanced by tuning more than replaced (Prakash et al., ICLR 2024): the items "
                "whose correctness changes are where to look. Per task, on the shared documents, each item "
                "that goes wrong \u2192 right or right \u2192 wrong, with the tuned-minus-base change of its "
                "attribution share per prompt part, its instruction attention and its reference KL (where "
                "the runs computed them)."
            )
        ]
        count_rows = []
        for t in data.tasks:
            count_rows.append(
                [
                    t.task,
                    f"{t.base} \u2192 {t.tuned}",
                    t.correctness_metric,
                    t.n_shared,
                    t.counts[WRONG_TO_RIGHT],
                    t.counts[RIGHT_TO_WRONG],
                    t.counts["right->right"],
                    t.counts["wrong->wrong"],
                ]
            )
        blocks.append(
            R.Table(
                [
                    "task",
                    "runs",
                    "correct by",
                    "shared",
                    "wrong\u2192right",
                    "right\u2192wrong",
                    "both right",
                    "both wrong",
                ],
                count_rows,
                "Flip counts per task",
            )
        )
        for t in data.tasks:
            if t.metrics:
                blocks.append(
                    R.Table(
                        ["direction", "items"] + [f"mean \u0394 {m}" for m in t.metrics],
                        [
                            [direction, t.counts[direction]]
                            + [t.means[direction].get(m, math.nan) for m in t.metrics]
                            for direction in (WRONG_TO_RIGHT, RIGHT_TO_WRONG)
                        ],
                        f"{t.task}: mean change per flip direction ({t.tuned} minus {t.base})",
                    )
                )
            if not t.items:
                continue
            anchors = data.links.get(f"{t.task}/{t.tuned}", {})
            rows = [
                [item.doc_id, item.direction, item.prompt[:90]]
                + [item.deltas.get(m, math.nan) for m in t.metrics]
                for item in t.items
            ]
            blocks.append(
                R.ExampleTable(
                    ["doc_id", "flip", "prompt"] + [f"\u0394 {m}" for m in t.metrics],
                    rows,
                    [anchors.get(item.key, "") for item in t.items],
                    f"{t.task}: every flipped item; the doc id links to its token view (report.html) where "
                    "the task's section drew one",
                    f"flips-{_slug(t.task)}-{_slug(t.tuned)}",
                )
            )
        return blocks
