"""Answer-emergence layer (`methods.logit_lens`): the model's final norm and output projection applied to
each decoder layer's residual at the target positions, from the pass's own primal forward (the
``resid_post`` capture point). Metrics: ``answer_layer``, the first layer (0-based) whose lens ranks the
first target token top-1, and ``answer_depth``, that layer as a share of the model's depth, ``(layer + 1) /
layers``; both absent when no layer ranks it first. The record keeps the target's rank per layer and target
position and each position's first top-1 layer. Opt-in: ``interp_signals=logit_lens``.
"""

from __future__ import annotations

import torch

from ...arch import get_adapter
from ...methods.logit_lens import LensResult, logit_lens
from ...metric_names import MetricSpec, register_metric
from ..context import PassContext
from ..registry import BaseSignal, register_signal

ANSWER_LAYER = register_metric(
    MetricSpec(
        "answer_layer",
        "index",
        "layer index (0-based)",
        "first layer whose logit lens ranks the first target token top-1 (absent when none does)",
        bounds=(0.0, None),
    )
).name
ANSWER_DEPTH = register_metric(
    MetricSpec(
        "answer_depth",
        "fraction",
        "share of the model's depth (0-1]",
        "answer_layer as (layer + 1) / layers: comparable across models of different depths",
        bounds=(0.0, 1.0),
    )
).name


@register_signal
class LogitLens(BaseSignal):
    """The layer at which the target appears, per request."""

    name = "logit_lens"
    order = 71
    needs = ("resid_post",)

    def compute(self, ctx: PassContext) -> tuple[dict[str, float], LensResult]:
        residuals = torch.stack([r[0, -ctx.n_targets :] for r in ctx.captured["resid_post"]])
        result = logit_lens(get_adapter(ctx.model), residuals, ctx.target)
        metrics: dict[str, float] = {}
        if result.answer_layer is not None:
            metrics[ANSWER_LAYER] = float(result.answer_layer)
            metrics[ANSWER_DEPTH] = float(result.answer_depth)
        return metrics, result
