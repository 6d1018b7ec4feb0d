"""Instruction attention: the attention mass answer tokens put on instruction tokens, per layer x head.

Reduced layer by layer during the primal forward (`methods.attention_probe`) under the model's own attention
implementation; for a family `arch` does not know, from every layer's probabilities under eager attention.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from ... import metric_names as names
from ...arch import UnsupportedArchitectureError
from ...methods.attention import instruction_attention, target_query_positions
from ...methods.attention_probe import (
    AttentionProbeError,
    InstructionAttentionProbe,
    NoAttentionError,
    OutsideInterfaceError,
    log_once,
)
from ...spans import instruction_mask
from ..context import PassContext
from ..registry import BaseSignal, register_signal
from ..settings import InterpSettings

logger = logging.getLogger(__name__)


@dataclass
class AttentionDetail:
    """Per layer x head: the instruction attention mass and its lift over the uniform share."""

    mass: list[list[float]]
    lift: list[list[float]]
    layers: list[int] | None = None  # the model layer of each row (hybrids: the softmax layers only)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            names.INSTRUCTION_ATTENTION: self.mass,
            names.INSTRUCTION_ATTENTION_LIFT: self.lift,
        }
        if self.layers is not None:
            out["layers"] = list(self.layers)
        return out


def attention_outputs(result: Any) -> tuple[dict[str, float], AttentionDetail]:
    """Scalars (means over layers, heads, targets) and the per-head detail of an `InstructionAttention`."""
    scalars = {
        names.INSTRUCTION_ATTENTION: float(result.mean_mass),
        names.INSTRUCTION_ATTENTION_LIFT: float(result.mean_lift),
    }
    layers = getattr(result, "layers", None)
    return scalars, AttentionDetail(mass=result.mass.tolist(), lift=result.lift.tolist(), layers=layers)


def attention_metrics(
    attentions: torch.Tensor, labels: Sequence[str], prompt_len: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Instruction attention per layer x head from the primal forward's full attention probabilities (the
    fallback for families the attention probe does not know)."""
    mask = torch.from_numpy(instruction_mask(labels))
    if not bool(mask.any()):
        return {}, {}
    scalars, detail = _from_attentions(attentions, mask, prompt_len)
    return scalars, detail.to_dict()


def _from_attentions(
    attentions: torch.Tensor, mask: torch.Tensor, prompt_len: int
) -> tuple[dict[str, float], AttentionDetail]:
    target_len = attentions.shape[-1] - prompt_len + 1
    return attention_outputs(
        instruction_attention(attentions, mask, target_query_positions(prompt_len, target_len))
    )


@register_signal
class InstructionAttentionSignal(BaseSignal):
    name = "attention"
    order = 10
    record_field = "attention"

    def enabled(self, settings: InterpSettings) -> bool:
        return settings.attention

    def prepare(self, ctx: PassContext) -> Callable[[], AbstractContextManager[Any]] | None | bool:
        if not ctx.has_instruction:
            return False
        try:
            probe = InstructionAttentionProbe(
                ctx.model, ctx.mask_tensor, target_query_positions(len(ctx.prompt), ctx.n_targets)
            )
        except NoAttentionError as err:  # state-space / linear-attention only: said once per run
            log_once(f"no-attention:{type(ctx.model).__name__}", "instruction attention left out: %s", err)
            return False
        except OutsideInterfaceError as err:
            log_once(
                f"eager:{type(ctx.model).__name__}",
                "instruction attention through eager attention probabilities: %s",
                err,
            )
            ctx.output_attentions = True
            return None
        except UnsupportedArchitectureError as err:  # no decoder layers found: no layer for eager's tuple
            log_once(
                f"no-layout:{type(ctx.model).__name__}",
                "instruction attention left out: %s (the attention probabilities the model returns cannot be "
                "assigned to its decoder layers)",
                err,
            )
            return False
        ctx.state[self.name] = probe
        return probe.capture

    def compute(self, ctx: PassContext) -> tuple[dict[str, float], AttentionDetail | None]:
        probe = ctx.state.get(self.name)
        kind = type(ctx.model).__name__
        if probe is not None:
            try:
                return attention_outputs(probe.result())
            except AttentionProbeError as err:  # left out, said once; the run goes on
                log_once(f"probe:{kind}", "instruction attention left out: %s", err)
                return {}, None
        if ctx.attentions is None:
            log_once(
                f"no-probs:{kind}",
                "instruction attention left out: %s returned no seq x seq probabilities under eager",
                kind,
            )
            return {}, None
        return _from_attentions(ctx.attentions, ctx.mask_tensor, len(ctx.prompt))

    def to_record(self, detail: AttentionDetail) -> dict[str, Any]:
        return detail.to_dict()
