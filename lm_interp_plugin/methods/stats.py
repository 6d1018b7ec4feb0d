"""Significance tests and bootstrap intervals for comparing two runs (base vs tuned) or two groups.

The compare report pairs per-example metrics of two runs, and the paper's tables compare group means with a
Welch t-test; both need the same few tests with the same result shape. The t-tests are written out from
their formulas (so the numbers are inspectable and tested against scipy); the Wilcoxon p-value comes from
scipy. Inputs must be finite: drop NaN explicitly (``x[np.isfinite(x)]``) so that what was left out is a
visible choice. Too few observations give NaN results, never an exception.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

logger = logging.getLogger(__name__)

Alternative = Literal["two-sided", "less", "greater"]
ALTERNATIVES: tuple[str, ...] = ("two-sided", "less", "greater")

__all__ = [
    "ALTERNATIVES",
    "TestResult",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "paired_t_test",
    "welch_t_test",
    "wilcoxon_signed_rank",
]


@dataclass(frozen=True)
class TestResult:
    """The outcome of one two-sample test.

    Attributes:
        statistic: the test statistic (t for the t-tests, W+ = sum of the ranks of positive differences for
            Wilcoxon); NaN when undefined.
        p_value: the p-value under ``alternative``; NaN when undefined.
        df: degrees of freedom (NaN for rank tests and undefined cases).
        n_a: observations in ``a``.
        n_b: observations in ``b``.
        mean_a: mean of ``a`` (NaN when empty).
        mean_b: mean of ``b`` (NaN when empty).
        name: which test, e.g. ``"welch_t"``.
        alternative: the alternative hypothesis about ``a`` relative to ``b``.
    """

    __test__ = False  # not a pytest test class despite the name

    statistic: float
    p_value: float
    df: float
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    name: str
    alternative: str = "two-sided"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (NaN stays a float NaN)."""
        return asdict(self)


def _as_sample(x: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sample of numbers; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} holds NaN or inf; drop them first (e.g. {name}[np.isfinite({name})]) so the exclusion "
            "is "
            f"explicit."
        )
    return arr


def _as_pair(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_sample(a, "a"), _as_sample(b, "b")
    if x.size != y.size:
        raise ValueError(
            f"paired samples must have the same length; got len(a) = {x.size} and len(b) = {y.size}. Join "
            "the "
            f"two runs on the example key before testing."
        )
    return x, y


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}; got {alternative!r}.")


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def _t_p_value(t: float, df: float, alternative: str) -> float:
    """p-value of a t statistic; an infinite t (zero spread, different means) gives 0 or 1."""
    if math.isnan(t) or math.isnan(df):
        return math.nan
    if alternative == "less":
        return float(sps.t.cdf(t, df))
    if alternative == "greater":
        return float(sps.t.sf(t, df))
    return float(min(1.0, 2.0 * sps.t.sf(abs(t), df)))


def _t_from(diff: float, se: float) -> float:
    if se > 0:
        return diff / se
    if diff == 0:
        return math.nan
    return math.copysign(math.inf, diff)


def welch_t_test(a: npt.ArrayLike, b: npt.ArrayLike, alternative: Alternative = "two-sided") -> TestResult:
    """Welch's unequal-variance t-test of mean(a) against mean(b).

    The paper compares the base and the tuned model's group means this way (one-sided, base < tuned), since
    the two models' score spreads differ.

    Args:
        a: first sample (1-D, finite).
        b: second sample (1-D, finite).
        alternative: ``"less"`` tests mean(a) < mean(b), ``"greater"`` mean(a) > mean(b).

    Returns:
        A `TestResult` named ``"welch_t"`` with the Welch-Satterthwaite df; NaN statistic/p/df when either
        sample has fewer than 2 values, or both have zero variance and equal means.
    """
    _check_alternative(alternative)
    x, y = _as_sample(a, "a"), _as_sample(b, "b")
    nan = math.nan
    t, df = nan, nan
    if x.size >= 2 and y.size >= 2:
        va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
        se = math.sqrt(va + vb)
        t = _t_from(float(x.mean() - y.mean()), se)
        if se > 0:
            df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
        elif not math.isnan(t):
            df = float(x.size + y.size - 2)
    return TestResult(
        statistic=float(t),
        p_value=_t_p_value(t, df, alternative),
        df=float(df),
        n_a=int(x.size),
        n_b=int(y.size),
        mean_a=_mean(x),
        mean_b=_mean(y),
        name="welch_t",
        alternative=alternative,
    )


def paired_t_test(a: npt.ArrayLike, b: npt.ArrayLike, alternative: Alternative = "two-sided") -> TestResult:
    """Paired t-test on the differences ``a - b`` (same examples scored by two runs).

    Args:
        a: per-example values of the first run.
        b: the same examples' values in the second run (same order, same length).
        alternative: ``"less"`` tests mean(a - b) < 0, ``"greater"`` mean(a - b) > 0.

    Returns:
        A `TestResult` named ``"paired_t"`` with df = n - 1; NaN when n < 2 or all differences are equal to 0.
    """
    _check_alternative(alternative)
    x, y = _as_pair(a, b)
    d = x - y
    t, df = math.nan, math.nan
    if d.size >= 2:
        se = float(d.std(ddof=1)) / math.sqrt(d.size)
        t = _t_from(float(d.mean()), se)
        df = float(d.size - 1)
    return TestResult(
        statistic=float(t),
        p_value=_t_p_value(t, df, alternative),
        df=df,
        n_a=int(x.size),
        n_b=int(y.size),
        mean_a=_mean(x),
        mean_b=_mean(y),
        name="paired_t",
        alternative=alternative,
    )


def wilcoxon_signed_rank(
    a: npt.ArrayLike, b: npt.ArrayLike, alternative: Alternative = "two-sided"
) -> TestResult:
    """Wilcoxon signed-rank test on ``a - b``: the paired test that does not assume normal differences.

    Zero differences are dropped (Wilcoxon's convention); ties share average ranks. The statistic reported is
    always W+ (the sum of the ranks of the positive differences), whatever the alternative; the p-value is
    scipy's (exact for small samples without ties, normal approximation otherwise).

    Args:
        a: per-example values of the first run.
        b: the same examples' values in the second run.
        alternative: ``"less"``: a tends to be smaller than b; ``"greater"``: larger.

    Returns:
        A `TestResult` named ``"wilcoxon"``; when every difference is 0 the samples are identical and the
        result is W+ = 0 with p = 1.0; NaN p-value for empty input.
    """
    _check_alternative(alternative)
    x, y = _as_pair(a, b)
    d = x - y
    nz = d[d != 0]
    if d.size == 0:
        w_plus, p = math.nan, math.nan
    elif nz.size == 0:
        w_plus, p = 0.0, 1.0
    else:
        ranks = sps.rankdata(np.abs(nz))
        w_plus = float(ranks[nz > 0].sum())
        p = float(sps.wilcoxon(nz, alternative=alternative, zero_method="wilcox").pvalue)
    return TestResult(
        statistic=w_plus,
        p_value=p,
        df=math.nan,
        n_a=int(x.size),
        n_b=int(y.size),
        mean_a=_mean(x),
        mean_b=_mean(y),
        name="wilcoxon",
        alternative=alternative,
    )


def _check_bootstrap(n_boot: int, alpha: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1; got {n_boot!r}.")
    if not (isinstance(alpha, (int, float, np.floating)) and 0 < alpha < 1):
        raise ValueError(
            f"alpha must lie strictly between 0 and 1 (0.05 gives a 95% interval); got {alpha!r}."
        )


def _percentile_interval(
    values: np.ndarray, stat: Callable[[np.ndarray], float], n_boot: int, alpha: float, seed: int
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = values.size
    replicates = np.empty(n_boot, dtype=np.float64)
    for i in range(n_boot):
        replicates[i] = stat(values[rng.integers(0, n, size=n)])
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(
    values: npt.ArrayLike,
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(values)``.

    Gives the report an uncertainty for a mean without assuming normality. Deterministic given ``seed``.

    Args:
        values: 1-D finite sample.
        stat: statistic of a resample (default: the mean).
        n_boot: number of resamples.
        alpha: 1 - confidence level.
        seed: seed of numpy's default generator.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than 2 values, where resampling says nothing.
    """
    _check_bootstrap(n_boot, alpha)
    x = _as_sample(values, "values")
    if x.size < 2:
        return (math.nan, math.nan)
    return _percentile_interval(x, stat, int(n_boot), float(alpha), seed)


def paired_bootstrap_ci(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(a - b)`` (by default the mean difference), resampling pairs.

    Resampling examples (not the two runs separately) keeps each example's base and tuned values together,
    which is what a per-example comparison needs.

    Args:
        a: per-example values of the first run.
        b: the same examples' values in the second run.
        stat: statistic of the resampled differences.
        n_boot: number of resamples.
        alpha: 1 - confidence level.
        seed: seed of numpy's default generator.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than 2 pairs.
    """
    _check_bootstrap(n_boot, alpha)
    x, y = _as_pair(a, b)
    if x.size < 2:
        return (math.nan, math.nan)
    return _percentile_interval(x - y, stat, int(n_boot), float(alpha), seed)
