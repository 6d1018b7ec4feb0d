"""Flips between a base and a tuned run, on planted samples whose flips and changes are known."""

from __future__ import annotations

import pytest

from lm_interp_plugin.report.flips import RIGHT_TO_WRONG, WRONG_TO_RIGHT, task_flips
from lm_interp_plugin.report.loading import DocSample, TaskRun


def _run(rows: dict[str, tuple[float, dict[str, float]]]) -> TaskRun:
    run = TaskRun("t")
    for i, (key, (acc, extra)) in enumerate(rows.items()):
        run.samples[key] = DocSample(key, i, {"acc": acc, **extra}, prompt=f"prompt {key}")
    return run


def test_flips_count_the_four_cells_and_carry_each_items_changes():
    share = "attribution_share_instruction"
    base = _run(
        {
            "a": (0.0, {share: 0.2, "instruction_attention": 0.1, "reference_kl": 0.5}),
            "b": (1.0, {share: 0.6, "instruction_attention": 0.3, "reference_kl": 0.1}),
            "c": (1.0, {share: 0.4}),
            "d": (0.0, {share: 0.1}),
            "e": (0.0, {share: 0.3, "instruction_attention": 0.2}),
            "only_base": (0.0, {share: 0.9}),
        }
    )
    tuned = _run(
        {
            "a": (1.0, {share: 0.5, "instruction_attention": 0.4, "reference_kl": 0.7}),
            "b": (0.0, {share: 0.2, "instruction_attention": 0.2, "reference_kl": 0.4}),
            "c": (1.0, {share: 0.9}),
            "d": (0.0, {share: 0.0}),
            "e": (1.0, {share: 0.4}),
        }
    )
    got = task_flips("t", "base", base, "tuned", tuned)
    assert got.n_shared == 5 and got.correctness_metric == "acc"
    assert got.counts == {WRONG_TO_RIGHT: 2, RIGHT_TO_WRONG: 1, "right->right": 1, "wrong->wrong": 1}
    assert got.metrics == [share, "instruction_attention", "reference_kl"]
    by_key = {item.key: item for item in got.items}
    assert set(by_key) == {"a", "b", "e"} and by_key["b"].direction == RIGHT_TO_WRONG
    assert by_key["a"].deltas == pytest.approx(
        {share: 0.3, "instruction_attention": 0.3, "reference_kl": 0.2}
    )
    assert by_key["e"].deltas == pytest.approx({share: 0.1})  # attention absent in tuned: left out, not 0
    assert got.means[WRONG_TO_RIGHT] == pytest.approx(
        {share: 0.2, "instruction_attention": 0.3, "reference_kl": 0.2}
    )
    assert got.means[RIGHT_TO_WRONG] == pytest.approx(
        {share: -0.4, "instruction_attention": -0.1, "reference_kl": 0.3}
    )


def test_no_correctness_metric_means_no_flips():
    base = TaskRun("t", {"a": DocSample("a", 0, {"instruction_importance": 1.0})})
    assert task_flips("t", "base", base, "tuned", base) is None
