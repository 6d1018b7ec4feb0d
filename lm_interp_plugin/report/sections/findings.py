"""The paper's three findings for a declared base/tuned pair (`findings`), else a neutral comparison of the
same metrics (`differences`): two sections, one of which is empty on any set of runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ... import metric_names as names
from .. import render as R
from ..comparability import compare_faithfulness
from ..corrected import with_holm
from ..findings import ALPHA, NOT_MEASURABLE, FindingCheck, check_findings, differences
from . import Block, Figures, ReportContext, Section, register_section

_HEADERS = [
    "finding",
    "task",
    "metric",
    "runs",
    "baseline",
    "other",
    "diff",
    "95% CI",
    "p (paired t)",
    "p (Holm)",
    "n",
]


@dataclass
class FindingsData:
    checks: list[FindingCheck]
    pair: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.checks]


#: What a rise and a fall of each finding's metric mean, in words.
READINGS: dict[str, tuple[str, str]] = {
    names.INSTRUCTION_IMPORTANCE: (
        "more of the answer's attribution falls on the instruction words",
        "less of the answer's attribution falls on the instruction words",
    ),
    names.INSTRUCTION_ATTENTION: (
        "the answer attends more to the instruction",
        "the answer attends less to the instruction",
    ),
    names.FFN_CONCEPT_OTHER: (
        "more of the FFN activation falls on no user-task concept ('other'): away from user tasks",
        "more of the FFN activation falls on user-task concepts",
    ),
}
#: The verdicts, explained beside the table.
VERDICTS = [
    (
        "shows up",
        f"the paired difference is significant (paired t-test, Holm-corrected p < {ALPHA}), in the paper's "
        "direction",
    ),
    (
        "opposite",
        f"significant (Holm p < {ALPHA}) but the other way: the tuned run moved against the paper's finding",
    ),
    (
        "not significant",
        f"Holm p >= {ALPHA} (or no difference): these runs neither confirm nor contradict it",
    ),
    ("untested", "no p-value (too few shared examples, or every difference the same)"),
    (
        NOT_MEASURABLE,
        "the metric is left out of the records because its labels are not valid on this model (finding 3: no "
        "FFN concept's share is higher on its own interp_instruct items, AUC >= 0.65); the reasons follow",
    ),
]


def meaning(check: FindingCheck) -> str:
    """What the row's verdict says about these runs, in words (with where the attribution went, if known)."""
    rise, fall = READINGS.get(check.metric, (f"{check.metric} is higher", f"{check.metric} is lower"))
    expected = rise if check.direction > 0 else fall
    seen = rise if check.mean_diff > 0 else fall
    if check.verdict == "shows up":
        text = f"as the paper found: {seen}"
    elif check.verdict == "opposite":
        text = f"against the paper: {seen}"
    elif check.verdict == "not significant":
        text = f"no significant change; the paper expects {expected}"
    elif check.verdict == NOT_MEASURABLE:
        text = f"not measurable; the paper expects {expected}"
    else:
        text = f"not tested; the paper expects {expected}"
    return f"{text}. {check.explanation}" if check.explanation else text


def _rows(checks: list[FindingCheck], with_explanation: bool, with_runs: bool) -> list[list[Any]]:
    rows = []
    for f in checks:
        row: list[Any] = [f.finding, f.task, f.metric]
        if with_runs:
            row.append(f"{f.baseline}\u00a0\u2192\u00a0{f.other}")  # no-break spaces: one line
        interval = (  # a no-break space: the interval never splits over two lines
            f"[{R.fmt(f.diff_ci_low)},\u00a0{R.fmt(f.diff_ci_high)}]"
            if f.diff_ci_low is not None and f.diff_ci_high is not None
            else R.fmt(None)
        )
        row += [f.mean_baseline, f.mean_other, f.mean_diff, interval, f.p_value, f.p_holm, f.n_pairs]
        # a short verdict on one line; a long one ("not measurable on this model") may wrap, so the table
        # keeps its width for the explanation at 1280 px
        short = len(f.verdict) <= len("not significant")
        row.append(f.verdict.replace(" ", "\u00a0") if short else f.verdict)
        if with_explanation:
            row.append(meaning(f))
        rows.append(row)
    return rows


def _table(checks: list[FindingCheck], last: str, caption: str, with_explanation: bool) -> R.Table:
    """The findings table; the runs column only when the rows compare more than one pair of runs (else the
    caption names the pair), which leaves the width to the numbers and the explanation."""
    pairs = list(dict.fromkeys((f.baseline, f.other) for f in checks))
    headers = _HEADERS[:3] + (["runs"] if len(pairs) > 1 else []) + _HEADERS[4:] + ["verdict", last]
    if len(pairs) == 1:
        caption += f" ({pairs[0][0]} \u2192 {pairs[0][1]})"
    return R.Table(headers, _rows(checks, with_explanation, len(pairs) > 1), caption)


@register_section
class Findings(Section[FindingsData]):
    """Wu et al.'s findings, each a paired test per task, for runs declared a base model and its tuned
    version."""

    name, title, order = "findings", "The paper's findings on these runs", 20

    def analyse(self, ctx: ReportContext) -> FindingsData:
        checks = (
            check_findings(ctx.tasks, tuned=ctx.pair["tuned"], baseline=ctx.pair["base"]) if ctx.pair else []
        )
        flags = _less_faithful(ctx) if checks else {}
        for check in checks:
            reason = flags.get((check.task, check.other))
            if check.finding == 1 and reason:  # finding 1 compares attributions across the two models
                note = f"flagged by the comparability check: {reason}"
                check.explanation = f"{note}. {check.explanation}" if check.explanation else note
        return FindingsData(with_holm(checks, ctx.tasks), dict(ctx.pair))

    def blocks(self, data: FindingsData, figures: Figures) -> list[Block]:
        if not data.checks:
            return []
        base, tuned = data.pair["base"], ", ".join(data.pair["tuned"])
        return [
            R.Paragraph(
                f"{base} is the base model and {tuned} its instruction-tuned version ({data.pair['how']}). "
                "Wu et al. (NAACL 2024): instruction tuning (1) raises attribution to the instruction, (2) "
                "makes heads attend more to it, (3) moves FFN knowledge toward user tasks. Each row is a "
                f"paired test on the shared examples; 'shows up' needs p (Holm) < {ALPHA} in the paper's "
                "direction, 'opposite' is significant the other way. p (Holm) is corrected over every paired "
                "test of the pair in this report (the family of the Holm-corrected section); the uncorrected "
                "p is beside it, and the 95% CI is the paired bootstrap interval of the mean difference. "
                "Findings 2 and 3 are per-example proxies (the global Table 3 / Table 5 views are below when "
                "given)."
            ),
            _table(data.checks, "what it means", "Paper findings check", with_explanation=True),
            R.Definitions([(f"verdict: {v}", text) for v, text in VERDICTS]),
        ]


def _less_faithful(ctx: ReportContext) -> dict[tuple[str, str], str]:
    """(task, tuned run) -> why the comparability section flags it (one model's attributions clearly less
    faithful), for the pair's tasks that it flags."""
    runs, base = ctx.by_label, ctx.pair["base"]
    flags = {}
    for tuned in ctx.pair["tuned"]:
        for task in sorted(set(runs[base].tasks) & set(runs[tuned].tasks)):
            got = compare_faithfulness(task, base, runs[base].tasks[task], tuned, runs[tuned].tasks[task])
            if got.flagged:
                flags[(task, tuned)] = "; ".join(r.reason for r in got.rows if r.less_faithful)
    return flags


@register_section
class Differences(Section[FindingsData]):
    """The same metrics for runs that are not a declared base/tuned pair: which run is higher, no verdict."""

    name, title, order = "differences", "Differences on the paper's metrics", 21

    def analyse(self, ctx: ReportContext) -> FindingsData:
        return FindingsData([] if ctx.pair else with_holm(differences(ctx.tasks), ctx.tasks))

    def blocks(self, data: FindingsData, figures: Figures) -> list[Block]:
        if not data.checks:
            return []
        return [
            R.Paragraph(
                "These runs are not declared as a base model and its instruction-tuned version, so the "
                "paper's findings about instruction tuning are not claimed here; the table only says which "
                f"run is higher (paired t-test, p (Holm) < {ALPHA}, corrected over every paired test of the "
                "two runs in this report). Declare a pair with `--pair BASE:TUNED` (or label the runs base "
                "and tuned) to check the findings."
            ),
            _table(data.checks, "reading", "Paired differences (other run minus baseline)", False),
        ]
