"""The paper's scores of any attribution matrix: quantised once, then instruction importance, part shares."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ... import metric_names as names
from ...methods.importance import ImportanceParams, importance_density, instruction_importance, part_shares
from ...methods.importance import quantise as quantise_matrix
from ...spans import instruction_mask
from ..context import PassContext
from ..registry import MethodAttribution


def attribution_metrics(
    S: np.ndarray, labels: Sequence[str], params: ImportanceParams, mask: np.ndarray | None = None
) -> dict[str, float]:
    """The paper's instruction importance plus the share of density mass on each prompt part; none of them
    when no density survives the sparsification (see `zero_mass_note`)."""
    if not importance_density(S, b=params.b, p=params.p).any():
        return {}
    mask = instruction_mask(labels) if mask is None else mask
    metrics: dict[str, float] = {}
    if mask.any():
        metrics[names.INSTRUCTION_IMPORTANCE] = float(instruction_importance(S, mask, b=params.b, p=params.p))
    for part, share in part_shares(S, list(labels), b=params.b, p=params.p).items():
        metrics[names.ATTRIBUTION_SHARE_PREFIX + part] = float(share)
    return metrics


def zero_mass_note(S: np.ndarray, raw: np.ndarray, params: ImportanceParams) -> str | None:
    """Why the attribution metrics of `S` are left out, or None when any density survives.

    Every quantised level at or under b (a long prompt whose largest attribution is near ``eps``, an empty
    prompt) leaves no density mass: the shares are 0/0 and the instruction importance measures nothing, so
    they are undefined, not 0 (0.0 would enter the task means as a finding).
    """
    if S.size == 0 or importance_density(S, b=params.b, p=params.p).any():
        return None
    top = float(np.max(raw)) if raw.size else 0.0
    return (
        f"no attribution survives the sparsification (every quantised level <= b={params.b}; the largest raw "
        f"attribution is {top:.3g} against eps {params.eps:g}): instruction importance and the attribution "
        "shares are undefined and left out (not 0)"
    )


def score(ctx: PassContext, raw: np.ndarray, prefix: str = "") -> MethodAttribution:
    """A method's matrix with its quantisation (once) and its prefixed metrics (none for an empty target or
    a matrix with no density mass: every attribution score is then undefined, not 0; a note says why)."""
    params = ctx.settings.importance
    S = quantise_matrix(raw, L=params.L, eps=params.eps)
    metrics = attribution_metrics(S, ctx.labels, params, ctx.mask) if ctx.n_targets else {}
    zero = zero_mass_note(S, raw, params) if ctx.n_targets else None
    if zero:
        ctx.notes.append((f"{prefix.rstrip('_')}: " if prefix else "") + zero)
    return MethodAttribution(raw=raw, quantised=S, metrics={prefix + k: v for k, v in metrics.items()})
