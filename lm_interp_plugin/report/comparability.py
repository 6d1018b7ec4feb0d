"""Are the two models' explanations comparable? Per-model faithfulness before comparing attributions.

Comparing where two models' attributions fall is only fair when both sets of attributions are about equally
faithful: if the tuned model's gradients explain its predictions far worse than the base model's do, a move
in its attribution shares says more about the explanation method than about the model. Per task, for each
faithfulness signal the runs computed (``deletion_gain_<method>`` with ``interp_deletion=true``: the gain of
attribution-ordered deletion over random orders, higher is more faithful; ``ig_completeness_error`` with
``interp_ig=true``: how far integrated gradients miss completeness, lower is better), this compares the two
models on their shared documents and flags the comparison when one model is clearly less faithful:

* the paired 95% bootstrap interval of the difference excludes 0, and
* the less faithful model's mean is worse by more than a factor `CLEAR_FACTOR`: a deletion gain below
  1 / `CLEAR_FACTOR` of the other's (or not positive while the other's is), a completeness error above
  `CLEAR_FACTOR` times the other's.

A signal neither run computed is absent with a reason, never a pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import metric_names as names
from ..methods import stats
from .loading import TaskRun

CLEAR_FACTOR = 2.0


@dataclass
class FaithfulnessRow:
    """One faithfulness signal on one task, base vs tuned, on the shared documents."""

    metric: str
    higher_is_better: bool
    n_pairs: int
    mean_base: float
    mean_tuned: float
    diff_ci_low: float
    diff_ci_high: float
    less_faithful: str | None
    reason: str


@dataclass
class TaskComparability:
    """The faithfulness rows of one task and whether its attribution comparison is flagged."""

    task: str
    base: str
    tuned: str
    rows: list[FaithfulnessRow] = field(default_factory=list)
    absent: str | None = None

    @property
    def flagged(self) -> bool:
        return any(row.less_faithful for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flagged": self.flagged}


def _faithfulness_metrics(metrics: set[str]) -> list[tuple[str, bool]]:
    gains = sorted(m for m in metrics if m.startswith(names.DELETION_GAIN_PREFIX))
    out = [(m, True) for m in gains]
    if names.IG_COMPLETENESS_ERROR in metrics:
        out.append((names.IG_COMPLETENESS_ERROR, False))
    return out


def _clearly_worse(worse: float, better: float, higher_is_better: bool) -> bool:
    if higher_is_better:
        return better > 0 and (worse <= 0 or worse * CLEAR_FACTOR < better)
    return worse > CLEAR_FACTOR * max(better, 0.0)


def compare_faithfulness(
    task: str, base_label: str, base: TaskRun, tuned_label: str, tuned: TaskRun
) -> TaskComparability:
    """The comparability of the two runs' attributions on `task` (see module docstring)."""
    out = TaskComparability(task, base_label, tuned_label)
    shared = sorted(set(base.samples) & set(tuned.samples))
    present = {m for k in shared for run in (base, tuned) for m in run.samples[k].metrics}
    wanted = _faithfulness_metrics(present)
    if not wanted:
        out.absent = (
            "no faithfulness signal in these runs (run both with interp_deletion=true or interp_ig=true to "
            "check that their attributions are comparably faithful)"
        )
        return out
    for metric, higher in wanted:
        pairs = [
            (base.samples[k].metrics.get(metric, math.nan), tuned.samples[k].metrics.get(metric, math.nan))
            for k in shared
        ]
        a = np.array([p[0] for p in pairs], dtype=float)
        b = np.array([p[1] for p in pairs], dtype=float)
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = a[keep], b[keep]
        if a.size < 2:
            continue
        low, high = stats.paired_bootstrap_ci(b, a)
        mean_a, mean_b = float(a.mean()), float(b.mean())
        separated = low > 0 or high < 0
        base_worse = (mean_a < mean_b) if higher else (mean_a > mean_b)
        worse_label, worse, better = (
            (base_label, mean_a, mean_b) if base_worse else (tuned_label, mean_b, mean_a)
        )
        clear = separated and _clearly_worse(worse, better, higher)
        direction = "higher is more faithful" if higher else "lower is more faithful"
        if clear:
            reason = (
                f"{worse_label} is clearly less faithful on {metric} ({direction}): {worse:.3g} vs "
                f"{better:.3g}, difference CI [{low:.3g}, {high:.3g}] excludes 0 and the gap exceeds a "
                f"factor {CLEAR_FACTOR:g}; attribution differences between the two models may reflect the "
                "method"
            )
        elif separated:
            reason = (
                f"the models differ on {metric} ({direction}), but by less than a factor {CLEAR_FACTOR:g}"
            )
        else:
            reason = f"no clear difference on {metric} (difference CI includes 0)"
        out.rows.append(
            FaithfulnessRow(
                metric, higher, int(a.size), mean_a, mean_b, low, high, worse_label if clear else None, reason
            )
        )
    if not out.rows:
        out.absent = "the faithfulness signals have fewer than 2 shared documents with values in both runs"
    return out
