"""The demo's lines for the base-vs-tuned measurements of issue 23: the flips per task, then one line per new
metric and task (base -> tuned means, the paired t p and its Holm-corrected value)."""

from __future__ import annotations

from ..interpret.signals.contrastive import CONTRASTIVE_INSTRUCTION_IMPORTANCE, CONTRASTIVE_MARGIN
from ..interpret.signals.logit_lens import ANSWER_DEPTH, ANSWER_LAYER
from ..interpret.signals.reference_shift import (
    REFERENCE_KL,
    REFERENCE_KL_FIRST,
    TOKEN_SHIFT_SHIFTED,
    TOP_TOKEN_AGREEMENT,
)
from ..report import ComparisonResult
from ..report.flips import RIGHT_TO_WRONG, WRONG_TO_RIGHT

#: the new per-example measurements the demo prints, in this order
NEW_METRICS = (
    REFERENCE_KL,
    REFERENCE_KL_FIRST,
    TOKEN_SHIFT_SHIFTED,
    TOP_TOKEN_AGREEMENT,
    ANSWER_LAYER,
    ANSWER_DEPTH,
    CONTRASTIVE_MARGIN,
    CONTRASTIVE_INSTRUCTION_IMPORTANCE,
)
#: how to read a metric's base -> tuned line where the two runs measure different things
_READING = {
    REFERENCE_KL: " (base: KL(base || tuned), tuned: KL(tuned || base))",
    REFERENCE_KL_FIRST: " (at the first answer token)",
    TOKEN_SHIFT_SHIFTED: " (share of answer tokens the other model ranks 3rd or worse)",
}


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def shift_lines(result: ComparisonResult) -> list[str]:
    """The flips and the new metrics of a base/tuned comparison, one printed line each."""
    lines: list[str] = []
    flips = result.sections.get("flips")
    for t in flips.tasks if flips is not None else []:
        change = t.means.get(WRONG_TO_RIGHT, {})
        moved = ", ".join(f"{m} {v:+.3f}" for m, v in change.items() if "instruction" in m or "kl" in m)
        lines.append(
            f"flips [{t.task}]: {t.counts[WRONG_TO_RIGHT]} wrong->right, {t.counts[RIGHT_TO_WRONG]} "
            f"right->wrong of {t.n_shared} ({t.correctness_metric})"
            + (f"; wrong->right items moved: {moved}" if moved else "")
        )
    corrected = result.sections.get("corrected_tests")
    holm = {(c.task, c.metric): c.p_holm for c in corrected.tests} if corrected is not None else {}
    for task in result.tasks:
        rows = {row.metric: row for row in task.paired}
        means = {label: {cell.metric: cell for cell in cells} for label, cells in task.leaderboard.items()}
        for metric in NEW_METRICS:
            cells = [means.get(label, {}).get(metric) for label in ("base", "tuned")]
            if any(cell is None for cell in cells):
                continue
            base, tuned = cells
            text = f"[{task.task}] {metric}: base {base.mean:.3f} -> tuned {tuned.mean:.3f}"
            row = rows.get(metric)
            if row is not None and row.n_pairs >= 2:
                text += (
                    f" (paired t p={_p(row.paired_t.get('p_value'))}, "
                    f"Holm p={_p(holm.get((task.task, metric)))}, n={row.n_pairs})"
                )
            else:  # absent where it is undefined: each run's mean is over its own items
                n_pairs = 0 if row is None else row.n_pairs
                text += f" (items with a value: base {base.n}, tuned {tuned.n}; {n_pairs} in both: no test)"
            lines.append(text + _READING.get(metric, ""))
    return lines
