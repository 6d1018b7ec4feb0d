"""Per-model faithfulness before comparing attributions: planted runs where one model is clearly worse."""

from __future__ import annotations

import numpy as np

from lm_interp_plugin.report.comparability import compare_faithfulness
from lm_interp_plugin.report.loading import DocSample, TaskRun


def _run(values: dict[str, np.ndarray]) -> TaskRun:
    run = TaskRun("t")
    n = len(next(iter(values.values())))
    for i in range(n):
        metrics = {"acc": 1.0, **{m: float(v[i]) for m, v in values.items()}}
        run.samples[f"k{i}"] = DocSample(f"k{i}", i, metrics)
    return run


def test_a_clearly_less_faithful_model_is_flagged_and_a_similar_one_is_not():
    rng = np.random.default_rng(0)
    gain = rng.normal(1.0, 0.1, 40)
    err = rng.uniform(0.01, 0.03, 40)
    base = _run({"deletion_gain_gxi": gain, "ig_completeness_error": err})
    tuned = _run({"deletion_gain_gxi": gain * 0.2, "ig_completeness_error": err * 1.1})
    got = compare_faithfulness("t", "base", base, "tuned", tuned)
    rows = {row.metric: row for row in got.rows}
    assert got.flagged and rows["deletion_gain_gxi"].less_faithful == "tuned"
    assert rows["deletion_gain_gxi"].diff_ci_high < 0  # tuned minus base
    assert rows["ig_completeness_error"].less_faithful is None  # 10% worse: not a factor of 2
    assert "less than a factor" in rows["ig_completeness_error"].reason


def test_worse_completeness_error_flags_the_base_and_no_signal_is_absent_not_passed():
    rng = np.random.default_rng(1)
    err = rng.uniform(0.01, 0.03, 30)
    got = compare_faithfulness(
        "t", "base", _run({"ig_completeness_error": err * 5}), "tuned", _run({"ig_completeness_error": err})
    )
    assert got.flagged and got.rows[0].less_faithful == "base"
    none = compare_faithfulness("t", "base", _run({"acc": np.ones(3)}), "tuned", _run({"acc": np.ones(3)}))
    assert not none.rows and not none.flagged and "interp_deletion=true" in none.absent
