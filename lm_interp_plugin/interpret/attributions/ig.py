"""Integrated gradients (zero baseline) as a second attribution method, with the paper's score on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import metric_names as names
from ...methods.integrated_gradients import integrated_gradients
from ..context import PassContext
from ..registry import AttributionMethod, MethodAttribution, register_method
from .scoring import score


@dataclass
class IGDetail:
    """The record's ``extras["ig"]``: the IG matrix (``prompt_len x target_len``) and its completeness gap."""

    raw: list[list[float]]
    completeness_rel_error_total: float

    def to_dict(self) -> dict[str, Any]:
        return {"raw": self.raw, "completeness_rel_error_total": self.completeness_rel_error_total}


@register_method
class IntegratedGradients(AttributionMethod):
    """IG[m, n] along the straight path from the zero embedding, Gauss-Legendre quadrature."""

    name = "ig"
    long_name = "integrated_gradients"
    metric_prefix = names.IG_PREFIX
    parameters = ("ig_steps", "objective")
    has_completeness = True
    order = 40

    def attribute(self, ctx: PassContext) -> MethodAttribution:
        ig = integrated_gradients(
            ctx.model,
            ctx.prompt,
            ctx.target,
            baseline="zero",
            steps=ctx.settings.ig_steps,
            objective=ctx.settings.objective,
        )
        values = ig.attributions
        raw = values.float().numpy() if hasattr(values, "numpy") else np.asarray(values)
        result = score(ctx, raw, self.metric_prefix)
        error = float(ig.completeness_rel_error_total)
        result.metrics[names.IG_COMPLETENESS_ERROR] = error
        result.detail = IGDetail(raw=raw.tolist(), completeness_rel_error_total=error)
        return result
