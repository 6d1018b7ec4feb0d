"""The paper's scores of any attribution matrix: quantised once, then instruction importance, part shares."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ... import metric_names as names
from ...methods.importance import ImportanceParams, instruction_importance, part_shares
from ...methods.importance import quantise as quantise_matrix
from ...spans import instruction_mask
from ..context import PassContext
from ..registry import MethodAttribution


def attribution_metrics(
    S: np.ndarray, labels: Sequence[str], params: ImportanceParams, mask: np.ndarray | None = None
) -> dict[str, float]:
    """The paper's instruction importance plus the share of density mass on each prompt part."""
    mask = instruction_mask(labels) if mask is None else mask
    metrics: dict[str, float] = {}
    if mask.any():
        metrics[names.INSTRUCTION_IMPORTANCE] = float(instruction_importance(S, mask, b=params.b, p=params.p))
    for part, share in part_shares(S, list(labels), b=params.b, p=params.p).items():
        metrics[names.ATTRIBUTION_SHARE_PREFIX + part] = float(share)
    return metrics


def score(ctx: PassContext, raw: np.ndarray, prefix: str = "") -> MethodAttribution:
    """A method's matrix with its quantisation (once) and its prefixed metrics (none for an empty target:
    every attribution score is then undefined, not 0)."""
    params = ctx.settings.importance
    S = quantise_matrix(raw, L=params.L, eps=params.eps)
    metrics = attribution_metrics(S, ctx.labels, params, ctx.mask) if ctx.n_targets else {}
    return MethodAttribution(raw=raw, quantised=S, metrics={prefix + k: v for k, v in metrics.items()})
