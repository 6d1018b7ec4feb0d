"""Holm across a report's base-vs-tuned tests: the family is the pair's paired t-tests over every task."""

from __future__ import annotations

import math

import pytest

from lm_interp_plugin.report.analysis import PairedComparison, TaskAnalysis
from lm_interp_plugin.report.corrected import corrected_tests, with_holm


def _row(
    task: str, metric: str, p: float, other: str = "tuned", means: tuple[float, float] = (0.1, 0.2)
) -> PairedComparison:
    base, tuned = means
    diff = tuned - base
    return PairedComparison(
        task, metric, "base", other, 10, base, tuned, diff, diff - 0.05, diff + 0.05, {"p_value": p}, {}, {}
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
    assert (got[0].diff_ci_low, got[0].diff_ci_high) == pytest.approx((0.05, 0.15), abs=1e-15)


def test_verdicts_read_the_holm_p():
    """A finding significant alone (p = 0.02) but not over its family of three tests (Holm p = 0.06) is
    "not significant", with the uncorrected p beside the corrected one and, for finding 1, where the tuned
    run's attribution went; a test that survives the correction keeps its verdict; neutral differences
    read the Holm p too."""
    from lm_interp_plugin.report.findings import check_findings, differences

    task = TaskAnalysis(
        "t",
        ["base", "tuned"],
        paired=[
            _row("t", "instruction_importance", 0.02),
            _row("t", "instruction_attention", 0.001),
            _row("t", "attribution_share_template", 0.5, means=(0.3, 0.6)),
        ],
    )
    checks = check_findings([task], tuned=["tuned"], baseline="base")
    assert [c.verdict for c in checks] == ["shows up", "shows up"]  # uncorrected: both p < 0.05
    with_holm(checks, [task])
    first, second = checks
    assert first.p_holm == pytest.approx(0.04) and second.p_holm == pytest.approx(0.003)
    # Holm: 0.001 * 3, then max(0.02 * 2, 0.003) = 0.04 < 0.05: still significant ...
    assert (first.verdict, second.verdict) == ("shows up", "shows up")
    task.paired[0] = _row("t", "instruction_importance", 0.03)  # ... 0.03 * 2 = 0.06 is not
    checks = with_holm(check_findings([task], tuned=["tuned"], baseline="base"), [task])
    assert checks[0].p_value == 0.03 and checks[0].p_holm == pytest.approx(0.06)
    assert checks[0].verdict == "not significant" and checks[1].verdict == "shows up"
    assert checks[0].explanation.startswith("tuned's attribution mass by prompt part: template 0.60")
    assert "(paired t p=0.03, Holm p=0.06, n=10): not significant" in checks[0].sentence()
    neutral = with_holm(differences([task]), [task])
    assert [d.verdict for d in neutral] == ["no significant difference", "higher in the other run"]
