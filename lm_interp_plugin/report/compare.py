"""`lm-interp compare`: a leaderboard-style base-vs-tuned report from lm-eval output directories.

Writes ``report.md``, ``report.html`` (self-contained) and ``results.json`` (strict JSON, null for undefined
numbers), plus every figure as a PNG next to them.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..spans import instruction_mask
from . import render as R
from .analysis import ExampleShift, TaskAnalysis, analyse, metric_kind, primary_metric, rank_shifts
from .errors import ReportInputError
from .families import by_family, metric_family
from .findings import ALPHA, FindingCheck, check_findings, declared_pairs, differences
from .global_explanations import GlobalSection, global_sections
from .loading import Run, resolve_runs
from .notes import is_warning
from .tokens import density_params, display_token, importance_density

logger = logging.getLogger(__name__)

MAX_TOKENS_SHOWN = 400
#: token views per task and run pair in report.html (every example up to this many, largest change first;
#: the table lists all), which keeps a report of a large benchmark a few MB
MAX_TOKEN_VIEWS = 200


@dataclass
class ComparisonResult:
    """What `compare` computed and where it wrote it; `to_dict` is the content of results.json."""

    baseline: str
    runs: list[dict[str, Any]]
    tasks: list[TaskAnalysis]
    notes: list[str] = field(default_factory=list)
    fingerprint_warnings: list[str] = field(default_factory=list)
    global_sections: list[GlobalSection] = field(default_factory=list)
    chosen_examples: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    findings: list[FindingCheck] = field(default_factory=list)
    differences: list[FindingCheck] = field(default_factory=list)
    pair: dict[str, Any] = field(default_factory=dict)

    def task(self, name: str) -> TaskAnalysis:
        return next(t for t in self.tasks if t.task == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "lm-interp-compare/1",
            "baseline": self.baseline,
            "conventions": "differences, paired tests and Welch tests are other run minus baseline "
            "(statistic sign: positive = other higher); CIs are 95% percentile bootstrap "
            "(2000 resamples, seed 0); examples are joined on lm-eval's doc_hash",
            "runs": self.runs,
            "tasks": {t.task: t.to_dict() for t in self.tasks},
            "notes": self.notes,
            "fingerprint_warnings": self.fingerprint_warnings,
            "pair": self.pair,
            "findings": [asdict(f) for f in self.findings],
            "differences": [asdict(f) for f in self.differences],
            "global_sections": [asdict(s) for s in self.global_sections],
            "chosen_examples": self.chosen_examples,
            "files": self.files,
        }


def strict_json(value: Any) -> Any:
    """A copy of `value` that `json.dumps(allow_nan=False)` accepts: NaN and infinities become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return strict_json(value.item())
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "x"


class _Figures:
    """Names, writes and remembers the PNG files of one report."""

    def __init__(self, out: Path):
        self.out = out
        self.count = 0
        self.files: list[str] = []

    def add(self, stem: str, png: bytes, caption: str) -> R.Image:
        self.count += 1
        name = f"fig{self.count:02d}_{_slug(stem)}.png"
        (self.out / name).write_bytes(png)
        self.files.append(name)
        return R.Image(name, png, caption)


def _leaderboard_blocks(task: TaskAnalysis, figures: _Figures) -> list[Any]:
    from . import plots

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


def _records(task: str, runs: dict[str, Run], labels: list[str], key: str) -> dict[str, Any] | None:
    recs = {label: runs[label].tasks[task].primary_record(key) for label in labels}
    return None if any(r is None for r in recs.values()) else recs


def _shift_blocks(
    task: TaskAnalysis,
    runs: dict[str, Run],
    baseline: str,
    n_examples: int,
    figures: _Figures,
    chosen: dict[str, list[str]],
) -> list[Any]:
    """Per other run: every shared example in a searchable, sortable table linking to its token view; the
    `n_examples` that moved most shown open with a heatmap, the rest folded."""
    from . import plots

    blocks: list[Any] = []
    metrics = list(dict.fromkeys(m for s in task.shifts for m in s.deltas))
    key_metric = primary_metric(metrics)
    judge = next((m for m in metrics if metric_kind(m) == "stock"), None)
    for other in dict.fromkeys(s.other for s in task.shifts):
        ranked = rank_shifts([s for s in task.shifts if s.other == other], key_metric)
        if not ranked:
            continue
        labels = [baseline, other]
        with_records = [s for s in ranked if _records(task.task, runs, labels, s.key) is not None]
        viewable = {s.key for s in with_records[:MAX_TOKEN_VIEWS]}
        blocks.append(R.Heading(f"{task.task}: every example ({baseline} \u2192 {other})", 3))
        headers = ["doc_id (base/run)", "prompt", f"{key_metric} {baseline}", f"{key_metric} {other}"]
        headers.append(f"\u0394 {key_metric}")
        if judge:
            headers += [f"{judge} {baseline}", f"{judge} {other}"]
        headers.append("FFN concept JSD")
        rows, links = [], []
        for s in ranked:
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
            links.append(_anchor(task.task, other, s) if s.key in viewable else "")
        caption = (
            f"All {len(rows)} shared examples, largest |\u0394 {key_metric}| first; the doc id links to the "
            "example's tokens (report.html)"
        )
        if len(with_records) > len(viewable):
            caption += f"; token views for the first {len(viewable)} of {len(with_records)}"
        table_id = f"examples-{_slug(task.task)}-{_slug(other)}"
        blocks.append(R.ExampleTable(headers, rows, links, caption, table_id))
        if not with_records:
            continue
        b, p = density_params(_records(task.task, runs, labels, with_records[0].key)[baseline])
        blocks.append(R.TokenLegend(b, p))
        for i, s in enumerate(with_records[: len(viewable)]):
            recs = _records(task.task, runs, labels, s.key)
            top = i < n_examples
            caption = (
                f"{task.task} doc {s.doc_id_baseline}/{s.doc_id_other}: \u0394 {key_metric} = "
                f"{R.fmt(s.deltas.get(key_metric))}"
            )
            blocks.append(_token_pair(caption, recs, _anchor(task.task, other, s), collapsed=not top))
            if top:
                chosen.setdefault(task.task, []).append(s.key)
                blocks.append(
                    figures.add(
                        f"{task.task}_tokens_{i + 1}",
                        plots.token_heatmaps(recs),
                        f"{task.task} doc {s.doc_id_baseline}: attribution S (prompt x target), "
                        "instruction tokens in red",
                    )
                )
    return blocks


def _record_blocks(task: TaskAnalysis, baseline: str, figures: _Figures) -> list[Any]:
    from . import plots

    blocks: list[Any] = []
    if baseline in task.attention_means:
        for other in task.attention_means:
            if other == baseline:
                continue
            png = plots.attention_maps(task.attention_means, baseline, other)
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
                plots.layer_group_concepts(task.layer_concept_shares),
                f"{task.task}: FFN concept proportions per layer group",
            )
        )
    return blocks


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _pick_baseline(runs: list[Run], baseline: str | None) -> str:
    labels = [r.label for r in runs]
    if baseline is None:
        return labels[0]
    if baseline not in labels:
        raise ReportInputError(
            f"baseline {baseline!r} is not one of the run labels {labels}; "
            "pass one of them (or give labels= to name the runs)"
        )
    return baseline


_FINDING_HEADERS = ["finding", "task", "metric", "runs", "baseline", "other", "diff", "p (paired t)", "n"]


def _finding_rows(checks: list[FindingCheck], with_explanation: bool) -> list[list[Any]]:
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


def _findings_blocks(result: ComparisonResult) -> list[Any]:
    """The paper's findings for a declared base/tuned pair, else a neutral comparison of the same metrics."""
    if result.findings:
        base, tuned = result.pair["base"], ", ".join(result.pair["tuned"])
        return [
            R.Heading("The paper's findings on these runs"),
            R.Paragraph(
                f"{base} is the base model and {tuned} its instruction-tuned version ({result.pair['how']}). "
                "Wu et al. (NAACL 2024): instruction tuning (1) raises attribution to the instruction, (2) "
                "makes heads attend more to it, (3) moves FFN knowledge toward user tasks. Each row is a "
                f"paired test on the shared examples; 'shows up' needs p < {ALPHA} in the paper's direction, "
                "'opposite' is significant the other way. Findings 2 and 3 are per-example proxies (the "
                "global Table 3 / Table 5 views are below when given)."
            ),
            R.Table(
                _FINDING_HEADERS + ["verdict", "where the attribution went instead"],
                _finding_rows(result.findings, with_explanation=True),
                "Paper findings check",
            ),
        ]
    if result.differences:
        return [
            R.Heading("Differences on the paper's metrics"),
            R.Paragraph(
                "These runs are not declared as a base model and its instruction-tuned version, so the "
                "paper's findings about instruction tuning are not claimed here; the table only says which "
                "run is higher (paired t-test, p < 0.05). Declare a pair with `--pair BASE:TUNED` (or label "
                "the runs base and tuned) to check the findings."
            ),
            R.Table(
                _FINDING_HEADERS + ["reading"],
                _finding_rows(result.differences, with_explanation=False),
                "Paired differences (other run minus baseline)",
            ),
        ]
    return []


def _pair_info(labels: list[str], pairs: list[tuple[str, str]] | None, baseline: str | None) -> dict:
    base, tuned = declared_pairs(labels, pairs, baseline)
    if base is None:
        return {}
    how = "declared with --pair" if pairs else "labelled base and tuned"
    return {"base": base, "tuned": tuned, "how": how}


def compare(
    run_dirs: list[Path],
    out: Path,
    labels: list[str] | None = None,
    heads: list[Path] | None = None,
    ffn: list[Path] | None = None,
    examples: int = 3,
    baseline: str | None = None,
    pairs: list[tuple[str, str]] | None = None,
    records: list[Path] | None = None,
) -> ComparisonResult:
    """Compare lm-eval runs (base first) and write report.md, report.html, results.json and PNGs to `out`.

    Args:
        run_dirs: lm-eval ``--output_path`` folders or their model subfolders; a folder with several model
            subfolders contributes one run per subfolder.
        out: output folder (created).
        labels: one name per run found (default: folder names).
        heads: optional ``explain-heads`` JSONL files (base, tuned) for the global heads section.
        ffn: optional ``explain-ffn`` JSONL files (base, tuned) for the global FFN section.
        examples: how many of the most-moved examples per task get token heatmaps.
        baseline: label of the run the others are compared against (default: the first, or the base of
            `pairs`).
        pairs: (base, tuned) labels of runs that are a base model and its instruction-tuned version; the
            paper's findings are checked only for them (without `pairs`, for runs labelled base and tuned).
            Other runs get a neutral comparison.
        records: one records folder per run found, for records written outside the run folder whose
            results file does not name them (runs of older versions, moved folders).

    Raises:
        ReportInputError: (and subclasses) unreadable run dirs, runs with no task or document in common, a
            pair that names no run.
    """
    if not run_dirs:
        raise ReportInputError("no run directories given; pass at least one lm-eval --output_path")
    runs = resolve_runs([Path(p) for p in run_dirs], labels, [Path(p) for p in records] if records else None)
    pair = _pair_info([r.label for r in runs], pairs, baseline)
    base = _pick_baseline(runs, baseline if baseline is not None else pair.get("base"))
    tasks, notes, warnings = analyse(runs, base)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_label = {r.label: r for r in runs}
    result = ComparisonResult(
        base,
        [{"label": r.label, "path": str(r.path), "model": r.model, "tasks": sorted(r.tasks)} for r in runs],
        tasks,
        notes,
        warnings,
        global_sections(heads, ffn, out),
        pair=pair,
    )
    figures = _Figures(out)
    blocks: list[Any] = [
        R.Paragraph(
            f"Baseline: {base}. Differences are other run minus baseline, on examples joined by lm-eval's "
            "doc_hash; 95% CIs are percentile bootstrap (2000 resamples)."
        ),
        R.Table(
            ["run", "path", "model", "tasks"],
            [[r["label"], r["path"], r["model"] or "\u2013", ", ".join(r["tasks"])] for r in result.runs],
            "Runs",
        ),
    ]
    if pair:
        result.findings = check_findings(tasks, tuned=pair["tuned"])
    else:
        result.differences = differences(tasks)
    blocks += _findings_blocks(result)
    if warnings:
        blocks += [R.Heading("Fingerprint warnings"), R.Notes(warnings, warning=True)]
    if notes:
        blocks += [R.Heading("Notes"), R.Notes(notes)]
    for task in tasks:
        blocks.append(R.Heading(f"Task {task.task}"))
        if task.notes:
            blocks.append(R.Notes(task.notes, warning=any(is_warning(n) for n in task.notes)))
        blocks += _leaderboard_blocks(task, figures)
        blocks += _paired_blocks(task)
        blocks += _shift_blocks(task, by_label, base, examples, figures, result.chosen_examples)
        blocks += _record_blocks(task, base, figures)
    for section in result.global_sections:
        blocks.append(R.Heading(section.title))
        if section.notes:
            blocks.append(R.Notes(section.notes, warning=True))
        if section.definitions:
            blocks.append(R.Definitions(section.definitions))
        if section.text:
            blocks += R.text_blocks(section.text)
        for name in section.images:
            figures.files.append(name)
            blocks.append(R.Image(name, (out / name).read_bytes(), f"{section.title}: {name}"))
    title = "lm-interp comparison: " + " vs ".join(r.label for r in runs)
    result.files = {
        "markdown": "report.md",
        "html": "report.html",
        "json": "results.json",
        "figures": figures.files,
    }
    (out / "report.md").write_text(R.to_markdown(title, blocks), encoding="utf-8")
    (out / "report.html").write_text(R.to_html(title, blocks), encoding="utf-8")
    (out / "results.json").write_text(
        json.dumps(strict_json(result.to_dict()), indent=1, allow_nan=False, ensure_ascii=False),
        encoding="utf-8",
    )
    logger.info("comparison report written to %s", out)
    return result
