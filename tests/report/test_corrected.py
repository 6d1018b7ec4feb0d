"""Holm across a report's base-vs-tuned tests: the family is the pair's paired t-tests over every task."""

from __future__ import annotations

import math

import pytest

from lm_interp_plugin.report.analysis import PairedComparison, TaskAnalysis
from lm_interp_plugin.report.corrected import corrected_tests


def _row(task: str, metric: str, p: float, other: str = "tuned") -> PairedComparison:
    return PairedComparison(
        task, metric, "base", other, 10, 0.1, 0.2, 0.1, 0.05, 0.15, {"p_value": p}, {}, {}
    )


def test_holm_runs_over_every_task_of_the_pair_only():
    a = TaskAnalysis("a", ["base", "tuned"])
    a.paired = [_row("a", "instruction_importance", 0.01), _row("a", "reference_kl", 0.04)]
    b = TaskAnalysis("b", ["base", "tuned", "x"])
    b.paired = [_row("b", "acc", 0.03), _row("b", "acc", 1e-9, other="x"), _row("b", "y", math.nan)]
    got = corrected_tests([a, b], "base", "tuned")
    assert [(t.task, t.metric) for t in got] == [
        ("a", "instruction_importance"),
        ("a", "reference_kl"),
        ("b", "acc"),
        ("b", "y"),
    ]
    # three tested p-values: 0.01 * 3, then max(0.03 * 2, 0.03), then max(0.04 * 1, 0.06)
    assert [t.p_holm for t in got[:3]] == pytest.approx([0.03, 0.06, 0.06])
    assert [t.p_value for t in got[:3]] == [0.01, 0.04, 0.03]  # the uncorrected p beside it
    assert got[3].p_value is None and got[3].p_holm is None and not got[3].significant
    assert got[0].finding == 1 and got[1].finding is None
    assert got[0].significant and not got[1].significant
    assert (got[0].diff_ci_low, got[0].diff_ci_high) == (0.05, 0.15)
