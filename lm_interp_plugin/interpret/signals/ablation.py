"""Instruction ablation: the target's log-prob drop when the instruction is removed, or replaced by neutral
tokens (`methods.ablation`); the unablated score comes from the primal forward."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ... import metric_names as names
from ...methods.ablation import AblationResult, instruction_ablation
from ..context import PassContext
from ..registry import BaseSignal, register_signal
from ..settings import InterpSettings


@register_signal
class AblationSignal(BaseSignal):
    name = "ablation"
    order = 30

    def enabled(self, settings: InterpSettings) -> bool:
        return settings.ablation

    def prepare(self, ctx: PassContext) -> Callable[[], AbstractContextManager[Any]] | None | bool:
        return None if ctx.has_instruction and not bool(ctx.mask.all()) else False

    def compute(self, ctx: PassContext) -> tuple[dict[str, float], AblationResult]:
        ablation = instruction_ablation(
            ctx.model,
            ctx.prompt,
            ctx.target,
            ctx.mask_tensor,
            neutral_token_id=ctx.tokens.neutral,
            original_logprobs=ctx.reusable_logprobs,
        )
        metrics = {
            names.ABLATION_DROP_REMOVED: float(ablation.drop_removed),
            names.ABLATION_DROP_REPLACED: float(ablation.drop_replaced),
            names.ABLATION_DROP_REMOVED_PER_TOKEN: float(ablation.drop_removed) / ctx.n_targets,
        }
        return metrics, ablation
