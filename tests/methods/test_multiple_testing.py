"""Holm's correction against the step-down procedure itself (an independent computation: rejections at
many alphas, not adjusted p-values)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lm_interp_plugin.methods.multiple_testing import holm


def _holm_rejections(p_values: list[float], alpha: float) -> set[int]:
    """The procedure as Holm wrote it: reject the smallest p-values in order while p_(j) <= alpha/(m-j+1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected: set[int] = set()
    for j, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - j):
            break
        rejected.add(index)
    return rejected


def test_holm_rejects_exactly_what_the_step_down_procedure_rejects():
    rng = np.random.default_rng(7)
    for _ in range(50):
        m = int(rng.integers(1, 12))
        p = list(rng.uniform(0, 0.2, size=m) ** 2)
        adjusted = holm(p)
        for alpha in (0.001, 0.01, 0.05, 0.1):
            assert {i for i, a in enumerate(adjusted) if a <= alpha} == _holm_rejections(p, alpha)
        assert all(a >= raw for a, raw in zip(adjusted, p)) and max(adjusted) <= 1.0


def test_holm_known_values_and_untested_entries():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    got = holm([0.02, math.nan, 0.5])
    assert got[0] == pytest.approx(0.04) and math.isnan(got[1]) and got[2] == pytest.approx(0.5)
    assert holm([]) == []
    with pytest.raises(ValueError, match="not in \\[0, 1\\]"):
        holm([1.5])
