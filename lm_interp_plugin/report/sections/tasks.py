"""Per task: the leaderboard, the paired comparison, every example with its token view, and the record
aggregates (attention maps, FFN concepts). The numbers come from `report.analysis` (computed once for every
section); this section chooses which examples get token views and heatmaps, and draws them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ...records import InterpRecord
from ...spans import instruction_mask
from .. import render as R
from ..analysis import ExampleShift, TaskAnalysis, metric_kind, primary_metric, rank_shifts
from ..families import by_family, metric_family
from ..loading import Run
from ..notes import is_warning
from ..tokens import density_params, display_token, importance_density
from . import Block, Figures, ReportContext, Section, _slug, register_section

MAX_TOKENS_SHOWN = 400
#: token views per task and run pair in report.html (every example up to this many, largest change first;
#: the table lists all), which keeps a report of a large benchmark a few MB
MAX_TOKEN_VIEWS = 200


@dataclass
class ExampleViews:
    """One task's examples against one other run: all of them ranked, and the records of those that get a
    token view (`viewed`, in rank order; the first `n_open` of them open with a heatmap)."""

    other: str
    key_metric: str | None
    judge: str | None
    ranked: list[ExampleShift]
    viewed: dict[str, dict[str, InterpRecord]]
    n_with_records: int
    n_open: int

    @property
    def chosen(self) -> list[str]:
        return list(self.viewed)[: self.n_open]


@dataclass
class TaskView:
    analysis: TaskAnalysis
    examples: list[ExampleViews] = field(default_factory=list)


@dataclass
class TasksData:
    baseline: str
    tasks: list[TaskView]

    def to_json(self) -> dict[str, Any]:
        return {t.analysis.task: t.analysis.to_dict() for t in self.tasks}

    @property
    def chosen_examples(self) -> dict[str, list[str]]:
        """Per task, the keys of the examples shown open with heatmaps."""
        out: dict[str, list[str]] = {}
        for t in self.tasks:
            for ex in t.examples:
                if ex.chosen:
                    out.setdefault(t.analysis.task, []).extend(ex.chosen)
        return out


def _records(task: str, runs: dict[str, Run], labels: list[str], key: str) -> dict[str, Any] | None:
    recs = {label: runs[label].tasks[task].primary_record(key) for label in labels}
    return None if any(r is None for r in recs.values()) else recs


def example_views(task: TaskAnalysis, runs: dict[str, Run], baseline: str, n_open: int) -> list[ExampleViews]:
    """Per other run: every shared example ranked by its change in the task's primary metric, and the records
    of the first `MAX_TOKEN_VIEWS` that have records on both sides."""
    metrics = list(dict.fromkeys(m for s in task.shifts for m in s.deltas))
    key_metric = primary_metric(metrics)
    judge = next((m for m in metrics if metric_kind(m) == "stock"), None)
    out = []
    for other in dict.fromkeys(s.other for s in task.shifts):
        ranked = rank_shifts([s for s in task.shifts if s.other == other], key_metric)
        if not ranked:
            continue
        labels = [baseline, other]
        with_records = [(s, _records(task.task, runs, labels, s.key)) for s in ranked]
        with_records = [(s, r) for s, r in with_records if r is not None]
        viewed = {s.key: r for s, r in with_records[:MAX_TOKEN_VIEWS]}
        out.append(ExampleViews(other, key_metric, judge, ranked, viewed, len(with_records), n_open))
    return out


def _shift_blocks(task: TaskAnalysis, views: ExampleViews, baseline: str, figures: Figures) -> list[Block]:
    """Every shared example in a searchable, sortable table linking to its token view; the examples that
    moved most shown open with a heatmap, the rest folded."""
    from .. import plots

    other, key_metric, judge = views.other, views.key_metric, views.judge
    blocks: list[Block] = [R.Heading(f"{task.task}: every example ({baseline} \u2192 {other})", 3)]
    headers = ["doc_id (base/run)", "prompt", f"{key_metric} {baseline}", f"{key_metric} {other}"]
    headers.append(f"\u0394 {key_metric}")
    if judge:
        headers += [f"{judge} {baseline}", f"{judge} {other}"]
    headers.append("FFN concept JSD")
    rows, links = [], []
    for s in views.ranked:
        row: list[Any] = [
            f"{s.doc_id_baseline}/{s.doc_id_other}",
            _clip(s.prompt, 90),
            s.baseline_values.get(key_metric, math.nan),
            s.other_values.get(key_metric, math.nan),
            s.deltas.get(key_metric, math.nan),
        ]
        if judge:
            row += [s.baseline_values.get(judge, math.nan), s.other_values.get(judge, math.nan)]
        row.append(s.ffn_jsd)
        rows.append(row)
        links.append(_anchor(task.task, other, s) if s.key in views.viewed else "")
    caption = (
        f"All {len(rows)} shared examples, largest |\u0394 {key_metric}| first; the doc id links to the "
        "example's tokens (report.html)"
    )
    if views.n_with_records > len(views.viewed):
        caption += f"; token views for the first {len(views.viewed)} of {views.n_with_records}"
    table_id = f"examples-{_slug(task.task)}-{_slug(other)}"
    blocks.append(R.ExampleTable(headers, rows, links, caption, table_id))
    if not views.viewed:
        return blocks
    b, p = density_params(next(iter(views.viewed.values()))[baseline])
    blocks.append(R.TokenLegend(b, p))
    by_key = {s.key: s for s in views.ranked}
    for i, (key, recs) in enumerate(views.viewed.items()):
        s = by_key[key]
        top = i < views.n_open
        caption = (
            f"{task.task} doc {s.doc_id_baseline}/{s.doc_id_other}: \u0394 {key_metric} = "
            f"{R.fmt(s.deltas.get(key_metric))}"
        )
        blocks.append(_token_pair(caption, recs, _anchor(task.task, other, s), collapsed=not top))
        if top:
            blocks.append(
                figures.add(
                    f"{task.task}_tokens_{i + 1}",
                    plots.token_heatmaps(recs),
                    f"{task.task} doc {s.doc_id_baseline}: quantised attribution S of each prompt token "
                    "(rows) to each answer token (columns), per run; instruction tokens in red. Grey levels "
                    "(at or under the cut b marked on the colour bar) are dropped by instruction_importance, "
                    "blue levels count",
                )
            )
    return blocks


def _leaderboard_blocks(task: TaskAnalysis, figures: Figures) -> list[Any]:
    from .. import plots

    blocks: list[Any] = []
    metrics = list(dict.fromkeys(s.metric for cells in task.leaderboard.values() for s in cells))
    headers = ["metric", "kind", "unit"] + [f"{label} mean [95% CI] (n)" for label in task.leaderboard]
    rows = []
    for metric in metrics:
        row: list[Any] = [metric, metric_kind(metric), metric_family(metric).key]
        for cells in task.leaderboard.values():
            cell = next((s for s in cells if s.metric == metric), None)
            row.append(
                "\u2013"
                if cell is None
                else f"{R.fmt(cell.mean)} [{R.fmt(cell.ci_low)}, {R.fmt(cell.ci_high)}] ({cell.n})"
            )
        rows.append(row)
    blocks.append(R.Table(headers, rows, "Leaderboard: per-example means, percentile bootstrap 95% CI"))
    families = by_family(metrics)
    blocks.append(R.Definitions([(f"unit {family.key}", family.unit) for family, _ in families]))
    if families:
        title = f"{task.task}: per-example means by metric family"
        png = plots.family_bars(title, task.leaderboard, families)
        blocks.append(
            figures.add(
                f"{task.task}_metrics",
                png,
                f"{task.task}: means with 95% CI, one panel (and scale) per metric family",
            )
        )
    return blocks


def _paired_blocks(task: TaskAnalysis) -> list[Any]:
    blocks: list[Any] = []
    if task.overlaps:
        blocks.append(
            R.Table(
                ["baseline", "run", "docs baseline", "docs run", "shared"],
                [[o.baseline, o.other, o.n_baseline, o.n_other, o.n_shared] for o in task.overlaps],
                "Overlap (joined on doc_hash)",
            )
        )
    if task.paired:
        rows = [
            [
                p.metric,
                p.other,
                p.n_pairs,
                p.mean_baseline,
                p.mean_other,
                f"{R.fmt(p.mean_diff)} [{R.fmt(p.diff_ci_low)}, {R.fmt(p.diff_ci_high)}]",
                R.fmt_p(p.paired_t["p_value"]),
                R.fmt_p(p.wilcoxon["p_value"]),
                R.fmt_p(p.welch["p_value"]),
            ]
            for p in task.paired
        ]
        blocks.append(
            R.Table(
                [
                    "metric",
                    "run",
                    "pairs",
                    "baseline mean",
                    "run mean",
                    "\u0394 (run \u2212 baseline) [95% CI]",
                    "paired t p",
                    "Wilcoxon p",
                    "Welch t p",
                ],
                rows,
                "Paired comparison on shared examples (Welch: all examples of each run, as in the paper)",
            )
        )
    defined = [c for c in task.correctness if c.n_correct > 0 and c.n_incorrect > 0]
    folded = _folded_correctness([c for c in task.correctness if c not in defined])
    if defined:
        rows = [
            [
                c.metric,
                c.run,
                c.correctness_metric,
                c.n_correct,
                c.mean_correct,
                c.n_incorrect,
                c.mean_incorrect,
                c.welch["statistic"],
                R.fmt_p(c.welch["p_value"]),
            ]
            for c in defined
        ]
        blocks.append(
            R.Table(
                [
                    "metric",
                    "run",
                    "correct by",
                    "n correct",
                    "mean correct",
                    "n incorrect",
                    "mean incorrect",
                    "Welch t",
                    "p",
                ],
                rows,
                "Does the metric separate correct from incorrect answers? (paper's Table 1 form)",
            )
        )
    if folded:
        blocks.append(R.Notes(folded))
    return blocks


def _folded_correctness(rows: list[Any]) -> list[str]:
    """One line per (run, correctness metric) whose split is undefined, instead of a row of dashes per
    metric."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for c in rows:
        groups.setdefault((c.run, c.correctness_metric), []).append(c)
    lines = []
    for (run, judge), cs in groups.items():
        first = cs[0]
        missing = "correct" if first.n_correct == 0 else "incorrect"
        total = first.n_correct + first.n_incorrect
        lines.append(
            f"{run} has no {missing} answers by {judge} ({first.n_correct} of {total} correct), so the "
            f"correct-vs-incorrect split is undefined for {len(cs)} metrics; their rows are left out"
        )
    return lines


def _anchor(task: str, other: str, shift: ExampleShift) -> str:
    return f"ex-{_slug(task)}-{_slug(other)}-{shift.doc_id_baseline}-{_slug(shift.key)[:12]}"


def _token_pair(caption: str, recs: dict[str, Any], anchor: str, collapsed: bool) -> R.TokenPair:
    pair = R.TokenPair(caption, anchor=anchor, collapsed=collapsed)
    for label, rec in recs.items():
        dens = importance_density(rec)
        n = min(len(rec.prompt_tokens), MAX_TOKENS_SHOWN)
        pair.views.append(
            R.TokenView(
                label,
                [display_token(t) for t in rec.prompt_tokens[:n]],
                list(dens[:n]),
                instruction_mask(rec.token_parts[:n]),
                [display_token(t) for t in rec.target_tokens],
            )
        )
    return pair


def _record_blocks(task: TaskAnalysis, baseline: str, figures: Figures) -> list[Any]:
    from .. import plots

    blocks: list[Any] = []
    if baseline in task.attention_means:
        for other in task.attention_means:
            if other == baseline:
                continue
            png = plots.attention_maps(task.attention_means, baseline, other, task.attention_layers)
            blocks.append(
                figures.add(
                    f"{task.task}_attention_{other}",
                    png,
                    f"{task.task}: instruction attention per layer x head, mean over shared "
                    f"examples ({baseline}, {other}, difference)",
                )
            )
    if len(task.concept_shares) >= 1:
        blocks.append(
            R.Table(
                ["concept"] + list(task.concept_shares),
                [
                    [c] + [d.get(c) for d in task.concept_shares.values()]
                    for c in sorted({c for d in task.concept_shares.values() for c in d})
                ],
                "Mean FFN concept shares (per-example concept activation)",
            )
        )
        blocks.append(
            figures.add(
                f"{task.task}_concepts",
                plots.concept_bars(task.concept_shares),
                f"{task.task}: mean FFN concept shares",
            )
        )
    if task.layer_concept_shares:
        blocks.append(
            figures.add(
                f"{task.task}_layer_concepts",
                plots.layer_group_concepts(task.layer_concept_shares, layers=task.ffn_layers),
                f"{task.task}: FFN concept proportions per layer group",
            )
        )
    return blocks


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


@register_section
class Tasks(Section[TasksData]):
    """One part per task, in the order of the runs' shared tasks."""

    name, title, order = "tasks", "", 40

    def analyse(self, ctx: ReportContext) -> TasksData:
        runs = ctx.by_label
        views = [TaskView(task, example_views(task, runs, ctx.baseline, ctx.examples)) for task in ctx.tasks]
        return TasksData(ctx.baseline, views)

    def blocks(self, data: TasksData, figures: Figures) -> list[Block]:
        folds: list[Block] = []
        for view in data.tasks:
            task = view.analysis
            blocks: list[Block] = []
            if task.notes:
                blocks.append(R.Notes(task.notes, warning=any(is_warning(n) for n in task.notes)))
            blocks += _leaderboard_blocks(task, figures)
            blocks += _paired_blocks(task)
            for views in view.examples:
                blocks += _shift_blocks(task, views, data.baseline, figures)
            blocks += _record_blocks(task, data.baseline, figures)
            folds.append(R.Fold(f"Task {task.task}", blocks, anchor=f"task-{_slug(task.task)}"))
        return folds
