"""Significance tests and bootstrap intervals, checked against scipy and against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from lm_interp_plugin.methods.stats import (
    TestResult,
    bootstrap_ci,
    paired_bootstrap_ci,
    paired_t_test,
    welch_t_test,
    wilcoxon_signed_rank,
)

ALTS = ["two-sided", "less", "greater"]


def _samples(seed, n_a=23, n_b=31, shift=0.4):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, n_a), rng.normal(shift, 2.5, n_b)


# ---------------------------------------------------------------- Welch


@pytest.mark.parametrize("alternative", ALTS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_welch_matches_scipy(alternative, seed):
    a, b = _samples(seed)
    got = welch_t_test(a, b, alternative=alternative)
    ref = sps.ttest_ind(a, b, equal_var=False, alternative=alternative)
    assert got.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert got.df == pytest.approx(ref.df, rel=1e-10)
    assert (got.n_a, got.n_b, got.name, got.alternative) == (23, 31, "welch_t", alternative)
    assert got.mean_a == pytest.approx(a.mean()) and got.mean_b == pytest.approx(b.mean())


def test_welch_hand_computed():
    # a: mean 2, var 1 (n 3); b: mean 5, var 4 (n 3) -> se^2 = 1/3 + 4/3 = 5/3
    a, b = [1.0, 2.0, 3.0], [3.0, 5.0, 7.0]
    got = welch_t_test(a, b)
    assert got.statistic == pytest.approx(-3 / math.sqrt(5 / 3))
    assert got.df == pytest.approx((5 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2))  # 50/17
    assert got.p_value == pytest.approx(2 * sps.t.sf(3 / math.sqrt(5 / 3), 50 / 17))
    one_sided = welch_t_test(a, b, alternative="less")
    assert one_sided.p_value == pytest.approx(got.p_value / 2)
    assert welch_t_test(a, b, alternative="greater").p_value == pytest.approx(1 - got.p_value / 2)


def test_welch_small_and_degenerate_samples():
    for a, b in [([], [1.0, 2.0]), ([1.0], [1.0, 2.0]), ([1.0, 2.0], [3.0])]:
        res = welch_t_test(a, b)
        assert math.isnan(res.statistic) and math.isnan(res.p_value) and math.isnan(res.df)
    assert math.isnan(welch_t_test([], []).mean_a)
    same = welch_t_test([2.0, 2.0, 2.0], [2.0, 2.0])
    assert math.isnan(same.statistic) and math.isnan(same.p_value)
    apart = welch_t_test([1.0, 1.0], [3.0, 3.0], alternative="less")
    assert apart.statistic == -math.inf and apart.p_value == 0.0


# ---------------------------------------------------------------- paired t


@pytest.mark.parametrize("alternative", ALTS)
def test_paired_t_matches_scipy(alternative):
    rng = np.random.default_rng(5)
    a = rng.normal(size=40)
    b = a + rng.normal(0.2, 0.5, size=40)
    got = paired_t_test(a, b, alternative=alternative)
    ref = sps.ttest_rel(a, b, alternative=alternative)
    assert got.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert got.df == 39 and got.name == "paired_t"


def test_paired_t_hand_computed_and_edges():
    # differences 1, 2, 3: mean 2, sd 1 -> t = 2 / (1 / sqrt 3) = 2 sqrt 3, df 2
    got = paired_t_test([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert got.statistic == pytest.approx(2 * math.sqrt(3))
    assert got.p_value == pytest.approx(2 * sps.t.sf(2 * math.sqrt(3), 2))
    assert math.isnan(paired_t_test([1.0], [2.0]).p_value)
    assert math.isnan(paired_t_test([], []).statistic)
    assert math.isnan(paired_t_test([1.0, 2.0], [1.0, 2.0]).p_value), "all-zero differences: no test"
    with pytest.raises(ValueError, match=r"len\(a\) = 3 and len\(b\) = 2"):
        paired_t_test([1, 2, 3], [1, 2])


# ---------------------------------------------------------------- Wilcoxon


@pytest.mark.parametrize("alternative", ALTS)
@pytest.mark.parametrize("n", [8, 80])  # exact and normal-approximation regimes
def test_wilcoxon_matches_scipy(alternative, n):
    rng = np.random.default_rng(n)
    a = rng.normal(size=n)
    b = a + rng.normal(0.3, 1.0, size=n)
    got = wilcoxon_signed_rank(a, b, alternative=alternative)
    ref = sps.wilcoxon(a, b, alternative=alternative)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    d = a - b
    w_plus = sps.rankdata(np.abs(d))[d > 0].sum()
    assert got.statistic == pytest.approx(w_plus)
    if alternative != "two-sided":
        assert got.statistic == pytest.approx(ref.statistic)  # scipy reports W+ for one-sided tests
    assert math.isnan(got.df) and got.name == "wilcoxon"


def test_wilcoxon_hand_computed():
    # five positive differences 1..5: W+ = 15; exact two-sided p = 2 / 2**5
    got = wilcoxon_signed_rank([2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 1.0, 1.0, 1.0, 1.0])
    assert got.statistic == 15.0
    assert got.p_value == pytest.approx(2 / 32)
    assert wilcoxon_signed_rank([2.0, 3.0, 4.0, 5.0, 6.0], [1.0] * 5, alternative="greater").p_value == (
        pytest.approx(1 / 32)
    )


def test_wilcoxon_zero_differences():
    same = wilcoxon_signed_rank([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.statistic == 0.0 and same.p_value == 1.0
    # zeros are dropped: identical to the test on the non-zero differences alone
    got = wilcoxon_signed_rank([1.0, 5.0, 3.0, 9.0, 2.0, 7.0], [1.0, 2.0, 3.0, 4.0, 2.5, 1.0])
    ref = sps.wilcoxon([3.0, 5.0, -0.5, 6.0])
    assert got.p_value == pytest.approx(ref.pvalue)
    assert math.isnan(wilcoxon_signed_rank([], []).p_value)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_matches_scipy_percentile_and_is_deterministic():
    rng = np.random.default_rng(11)
    x = rng.exponential(size=60)
    low, high = bootstrap_ci(x, n_boot=4000, seed=1)
    assert (low, high) == bootstrap_ci(x, n_boot=4000, seed=1)
    assert (low, high) != bootstrap_ci(x, n_boot=4000, seed=2)
    assert low < x.mean() < high
    ref = sps.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=1)
    # different resamples, same target: the ends agree to Monte-Carlo error
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.15 * se)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.15 * se)
    # the normal-theory interval is close for a mean of 60 values
    assert low == pytest.approx(x.mean() - 1.96 * se, abs=0.3 * se)


def test_bootstrap_ci_hand_computed_and_custom_stat():
    # a constant sample: every resample has the same statistic
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    # two values {0, 1}: the resampled median over n = 2 is 0, 0.5 or 1; the 95% interval spans [0, 1]
    assert bootstrap_ci([0.0, 1.0], stat=np.median, n_boot=500) == (0.0, 1.0)
    low, high = bootstrap_ci(np.arange(100.0), alpha=0.5, n_boot=3000)
    assert 47.0 < low < 49.5 < high < 52.0


def test_bootstrap_small_n_and_validation():
    for values in ([], [1.0]):
        low, high = bootstrap_ci(values)
        assert math.isnan(low) and math.isnan(high)
        assert all(math.isnan(v) for v in paired_bootstrap_ci(values, values))
    with pytest.raises(ValueError, match=r"alpha"):
        bootstrap_ci([1.0, 2.0], alpha=1.5)
    with pytest.raises(ValueError, match=r"n_boot"):
        bootstrap_ci([1.0, 2.0], n_boot=0)
    with pytest.raises(ValueError, match=r"values holds NaN"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"alternative must be one of"):
        welch_t_test([1.0, 2.0], [1.0, 3.0], alternative="smaller")


def test_paired_bootstrap_ci_is_on_the_differences():
    rng = np.random.default_rng(4)
    a = rng.normal(size=50)
    b = a - 1.0 + rng.normal(0, 0.01, size=50)  # a - b is almost exactly 1
    low, high = paired_bootstrap_ci(a, b, seed=3)
    assert 0.99 < low < 1.0 < high < 1.01
    assert (low, high) == bootstrap_ci(a - b, seed=3), "same seed, same resamples of the differences"
    with pytest.raises(ValueError, match=r"same length"):
        paired_bootstrap_ci([1.0, 2.0], [1.0])


def test_result_is_plain_data():
    res = welch_t_test([1.0, 2.0, 3.0], [2.0, 3.0, 5.0])
    assert isinstance(res, TestResult)
    d = res.to_dict()
    assert set(d) >= {"statistic", "p_value", "df", "n_a", "n_b", "mean_a", "mean_b", "name"}
