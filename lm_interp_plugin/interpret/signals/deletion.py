"""Deletion curves (faithfulness) of each attribution method of the pass, against random orders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ... import metric_names as names
from ...methods.faithfulness import DeletionCurve, deletion_curve
from ...methods.importance import importance_density
from ..context import PassContext
from ..registry import BaseSignal, register_signal
from ..settings import InterpSettings


@dataclass
class DeletionDetail:
    """One curve per attribution method, by method name (``gxi``, ``ig``)."""

    curves: dict[str, DeletionCurve]

    def to_dict(self) -> dict[str, Any]:
        return {method: curve.to_dict() for method, curve in self.curves.items()}


@register_signal
class DeletionSignal(BaseSignal):
    name = "deletion"
    order = 50

    def enabled(self, settings: InterpSettings) -> bool:
        return settings.deletion

    def compute(self, ctx: PassContext) -> tuple[dict[str, float], DeletionDetail]:
        metrics: dict[str, float] = {}
        curves: dict[str, DeletionCurve] = {}
        protect = None
        if ctx.tokens.bos is not None:  # BOS (from the config, else the tokenizer) is never deleted
            protect = torch.zeros(len(ctx.prompt), dtype=torch.bool)
            protect[0] = int(ctx.prompt[0]) == ctx.tokens.bos
        for method, attribution in ctx.attributions.items():
            density = importance_density(attribution.quantised, b=0, p=ctx.settings.p)
            curve = deletion_curve(
                ctx.model,
                ctx.prompt,
                ctx.target,
                torch.as_tensor(density, dtype=torch.float32),
                protect_mask=protect,
            )
            metrics[names.DELETION_AREA_PREFIX + method] = float(curve.area)
            if curve.area_gain is not None:
                metrics[names.DELETION_GAIN_PREFIX + method] = float(curve.area_gain)
            curves[method] = curve
        return metrics, DeletionDetail(curves)

    def to_record(self, detail: DeletionDetail) -> dict[str, Any]:
        return {f"deletion_{method}": curve for method, curve in detail.to_dict().items()}
