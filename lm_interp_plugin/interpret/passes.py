"""One interpretation pass over a (prompt, target) pair: a loop over the registered methods and signals.

This is the model-agnostic core shared by the lm-eval model (`harness.model`) and the Python API
(`lm_interp_plugin.attribute`), both through `builder.build_pass`. It never imports lm-eval. Every temporary
change it makes to a model (attention implementation, hooks, requires_grad) is undone on exit, also on error.
What it runs is registered elsewhere: attribution methods in `attributions/`, signals in `signals/`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..arch import check_attributable
from .attributions import METHODS
from .attributions.scoring import attribution_metrics
from .capture import capture
from .context import PassContext, PassResult, TokenRoles
from .probes import Probe
from .registry import AttributionMethod, Signal
from .settings import InterpSettings
from .signals import SIGNALS
from .signals.attention import attention_metrics
from .signals.ffn import FFN_PROBE

logger = logging.getLogger(__name__)

__all__ = ["PassContext", "PassResult", "attention_metrics", "attribution_metrics", "run_pass"]


def run_pass(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    target_ids: Sequence[int],
    labels: Sequence[str],
    settings: InterpSettings,
    ffn_probe: Probe | None = None,
    neutral_token_id: int | None = None,
    check_fp32: bool = False,
    tokens: TokenRoles | None = None,
    resources: Mapping[str, Any] | None = None,
) -> PassResult:
    """Attribute `target_ids` onto `prompt_ids` and derive the per-example metrics of every enabled signal.

    Args:
        model: a Hugging Face causal LM.
        prompt_ids / target_ids: token ids as the model scored them (BOS included where added).
        labels: one part label per prompt token (see `spans.label_tokens`).
        settings: what to compute.
        ffn_probe: the model's `ffn_probe.FFNProbe` (its FFN components), or None: no FFN concepts.
        neutral_token_id: the ablation's replacement token (see `tokens`).
        check_fp32: for a half-precision model, also attribute in float32 and record the relative error
            (``extras["fp32_check"]``). Independently of it, a half-precision pass that gives NaN or inf is
            re-run in float32 and says so in ``notes`` and ``extras["precision"]``.
        tokens: neutral and BOS tokens (`builder.build_pass` resolves them from the config or the tokenizer).
        resources: what signals read beyond the request, by their keys (a reference model, a foil choice).

    Raises:
        UnsupportedArchitectureError: for a family lm-interp cannot attribute (`arch.NOT_ATTRIBUTABLE`).
    """
    check_attributable(model)
    ctx = PassContext.create(
        model,
        prompt_ids,
        target_ids,
        labels,
        settings,
        tokens=tokens or TokenRoles(neutral=neutral_token_id),
        resources={**(resources or {}), **({FFN_PROBE: ffn_probe} if ffn_probe is not None else {})},
        check_fp32=check_fp32,
    )
    primary, *others = [METHODS[name]() for name in settings.method_names]
    steps: list[Signal | AttributionMethod] = []
    if ctx.n_targets:  # an empty target: nothing is attributed, every signal is undefined
        needs: list[str] = []
        for signal in sorted((s for s in SIGNALS.values() if s.enabled(settings)), key=lambda s: s.order):
            own = signal.prepare(ctx)
            if own is False:  # not for this request (no instruction, no FFN components, ...)
                continue
            steps.append(signal)
            needs += signal.needs
            if own is not None:
                ctx.captures.append(own)
        if needs:
            ctx.captures.insert(0, lambda: capture(model, needs, ctx.n_targets, ctx.captured))
        steps = sorted([*steps, *others], key=lambda step: step.order)
    ctx.attributions[primary.name] = first = primary.attribute(ctx)
    ctx.metrics.update(first.metrics)
    fields: dict[str, dict[str, Any]] = {"attention": {}, "ffn": {}, "extras": {}}
    for step in steps:
        if isinstance(step, AttributionMethod):
            ctx.attributions[step.name] = attribution = step.attribute(ctx)
            metrics, detail = attribution.metrics, attribution.detail
        else:
            metrics, detail = step.compute(ctx)
        ctx.metrics.update(metrics)
        if detail is not None:
            ctx.details[step.name] = detail
            fields[step.record_field].update(step.to_record(detail))
    return PassResult(
        metrics=ctx.metrics,
        raw=ctx.raw,
        quantised=ctx.quantised,
        target_logprobs=ctx.target_logprobs.numpy(),
        mode=ctx.mode,
        attention=fields["attention"],
        ffn=fields["ffn"],
        notes=ctx.notes,
        extras={**ctx.precision, **fields["extras"], "precision_used": ctx.precision_used},
        details=ctx.details,
        method=primary.long_name,
    )
