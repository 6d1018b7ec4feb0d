"""FFN concepts: the share of each layer's FFN output (at the target positions) on components of each
concept, averaged over layers. Needs the model's FFN components (`ffn_probe.FFNProbe`, built by
`builder.build_pass` from the on-disk cache) and the ``mlp_out`` activations of the primal forward."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ...methods.attention_probe import log_once
from ..context import PassContext
from ..registry import BaseSignal, register_signal
from ..settings import InterpSettings

FFN_PROBE = "ffn_probe"  # the resource key of the model's FFN probe (components and their labels)


@dataclass
class FFNDetail:
    """Per layer: the distribution over components and the concept shares; their mean; component labels."""

    component_distribution: list[list[float]]
    layer_concept_shares: list[dict[str, float]]
    concept_shares: dict[str, float]
    component_labels: list[list[str]]
    #: concepts left out of the per-example metrics (not valid on this model), each with its reason
    concepts_absent: dict[str, str] = field(default_factory=dict)
    #: the model layer index of each row, where some layers have no FFN (hybrids); None: row i is layer i
    layers: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "component_distribution": self.component_distribution,
            "layer_concept_shares": self.layer_concept_shares,
            "concept_shares": self.concept_shares,
            "component_labels": self.component_labels,
            "concepts_absent": self.concepts_absent,
        }
        if self.layers is not None:
            out["layers"] = self.layers
        return out


@register_signal
class FFNConceptSignal(BaseSignal):
    name = "ffn"
    order = 20
    needs = ("mlp_out",)
    record_field = "ffn"

    def enabled(self, settings: InterpSettings) -> bool:
        return settings.ffn

    def prepare(self, ctx: PassContext) -> Callable[[], AbstractContextManager[Any]] | None | bool:
        return None if ctx.resources.get(FFN_PROBE) is not None else False

    def compute(self, ctx: PassContext) -> tuple[dict[str, float], FFNDetail | None]:
        why = None
        try:
            outputs = ctx.activations("mlp_out")
            scalars, detail = ctx.resources[FFN_PROBE].metrics_from(outputs, ctx.n_targets)
            return scalars, FFNDetail(**detail)
        except RuntimeError as err:  # a layer's FFN did not run, or its output cannot be read
            why = str(err)
        log_once(f"ffn:{type(ctx.model).__name__}", "FFN concepts left out: %s", why)  # once per run
        return {}, None

    def to_record(self, detail: FFNDetail) -> dict[str, Any]:
        return detail.to_dict()
