"""Holm's step-down correction for a report's family of base-vs-tuned tests.

A report runs many paired tests at once (three findings per task, every metric's difference, the new shift
metrics); at alpha = 0.05 each, some come out "significant" by chance alone. Holm (1979) controls the
family-wise error rate without assuming independence: sort the m p-values, compare the j-th smallest with
``alpha / (m - j + 1)``, and stop at the first that fails. The adjusted p-value of the j-th smallest,
``max_{i <= j} min(1, (m - i + 1) p_(i))``, is rejected at alpha exactly when the procedure rejects it, so a
report can print it beside the uncorrected p. NaN (untested) p-values are left out of the family and stay NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order (NaN in, NaN out; the family is the finite ones)."""
    for p in p_values:
        if not (math.isnan(p) or 0.0 <= p <= 1.0):
            raise ValueError(f"p-value {p!r} is not in [0, 1]: pass p-values (NaN for an untested one)")
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(tested)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted
