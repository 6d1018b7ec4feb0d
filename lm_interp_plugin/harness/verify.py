"""A stored record is reused only if its attribution metrics are those of its own stored matrix.

Why: a record's checksum catches accidental damage, not an edit whose checksum was recomputed (a record
with an ``instruction_importance`` of 9.5 where its own matrix gives 0.54 was reused). The quantised matrix
and the part labels are in the record, so its paper metrics can be recomputed, exactly, from it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import metric_names as names
from ..methods.importance import ImportanceParams, quantise
from ..records import InterpRecord

#: Metrics recomputed from the stored matrix (the IG variants have their own matrix in ``extras``).
_CHECKED_PREFIXES = (names.INSTRUCTION_IMPORTANCE, names.ATTRIBUTION_SHARE_PREFIX)


def _params(record: InterpRecord) -> ImportanceParams | None:
    p: dict[str, Any] = record.params
    try:
        return ImportanceParams(L=p["L"], b=p["b"], p=p["p"], eps=p["eps"])
    except (KeyError, TypeError, ValueError):
        return None


def metrics_mismatch(record: InterpRecord) -> str | None:
    """Why `record`'s stored attribution metrics are not those of its stored matrices, or None.

    Records without stored matrices (``interp_store_matrices=false``) or without full params are not
    checked (nothing to check against).
    """
    from ..interpret.passes import attribution_metrics

    params = _params(record)
    if params is None or not record.quantised or not record.target_tokens:
        return None
    S = np.asarray(record.quantised, dtype=np.int64)
    if record.raw and not np.array_equal(quantise(np.asarray(record.raw), L=params.L, eps=params.eps), S):
        return "its quantised matrix is not the quantisation of its raw matrix (edited?)"
    expected = attribution_metrics(S, record.token_parts, params)
    stored = {k: v for k, v in record.metrics.items() if k.startswith(_CHECKED_PREFIXES)}
    for key in sorted(set(expected) | set(stored)):
        want, have = expected.get(key), stored.get(key)
        if want is None or have is None or not math.isclose(want, have, rel_tol=1e-9, abs_tol=1e-12):
            return f"its {key} ({have}) is not what its own stored matrix gives ({want}) (edited?)"
    return None
