"""Reference-model shift on the target tokens (``interp_reference=PATH``): how far the evaluated model's
next-token distributions are from a reference model's, its base when the tuned model is evaluated or the
other way round (`methods.shift`).

The evaluated model's logits at the target positions come from the pass's own primal forward (the ``logits``
capture point); the reference costs one teacher-forced forward without gradients per request. Metrics:

* ``reference_kl``: KL(evaluated || reference) per target position, averaged (nats); ``reference_kl_first``
  the KL at the first target position, where Qi et al. (ICLR 2025, arXiv 2406.05946) find it concentrated;
* ``token_shift_shifted`` / ``token_shift_marginal``: Lin et al.'s (arXiv 2312.01552) shares of target
  positions whose evaluated top-1 token the reference ranks >= 3 (shifted) or 1-2 (marginal);
* ``top_token_agreement``: the share of positions where both models' top-1 tokens agree;
* ``reference_first_divergence``: the first target position (0-based) whose top-1 tokens differ; absent when
  they agree on every position.
"""

from __future__ import annotations

import torch

from ...methods.shift import ShiftResult, distribution_shift, target_logits
from ...metric_names import MetricSpec, register_metric
from ..context import PassContext
from ..registry import BaseSignal, register_signal

#: `PassContext.resources` key of the loaded reference model (`harness.reference.load_reference`)
REFERENCE = "reference"

_POSITIONS = "share of target positions (0-1)"
REFERENCE_KL = register_metric(
    MetricSpec(
        "reference_kl",
        "nats",
        "nats",
        "KL(evaluated || reference) of the next-token distributions at each target position, averaged",
        bounds=(0.0, None),
    )
).name
REFERENCE_KL_FIRST = register_metric(
    MetricSpec(
        "reference_kl_first",
        "nats",
        "nats",
        "KL(evaluated || reference) at the first target position",
        bounds=(0.0, None),
    )
).name
TOKEN_SHIFT_SHIFTED = register_metric(
    MetricSpec(
        "token_shift_shifted",
        "fraction",
        _POSITIONS,
        "share of target positions whose evaluated top-1 token the reference ranks 3rd or worse (Lin et al.)",
        bounds=(0.0, 1.0),
    )
).name
TOKEN_SHIFT_MARGINAL = register_metric(
    MetricSpec(
        "token_shift_marginal",
        "fraction",
        _POSITIONS,
        "share of target positions whose evaluated top-1 token the reference ranks 2nd or 3rd (Lin et al.)",
        bounds=(0.0, 1.0),
    )
).name
TOP_TOKEN_AGREEMENT = register_metric(
    MetricSpec(
        "top_token_agreement",
        "fraction",
        _POSITIONS,
        "share of target positions where the evaluated model and the reference have the same top-1 token",
        bounds=(0.0, 1.0),
    )
).name
REFERENCE_FIRST_DIVERGENCE = register_metric(
    MetricSpec(
        "reference_first_divergence",
        "index",
        "target position (0-based)",
        "first target position where the two models' top-1 tokens differ (absent when they never do)",
        bounds=(0.0, None),
    )
).name


def softcapped(logits: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """The model's final logits from its output head's: Gemma-2 soft-caps them after the head
    (``tanh(logits / cap) * cap``), which the captured head output does not include."""
    config = getattr(model, "config", None)
    cap = getattr(config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@register_signal
class ReferenceShift(BaseSignal):
    """KL, rank shift and first divergence against the run's reference model."""

    name = "reference_shift"
    order = 70
    needs = ("logits",)

    def prepare(self, ctx: PassContext):
        if REFERENCE not in ctx.resources:
            ctx.notes.append(
                "reference_shift: no reference model in this pass (interp_reference=PATH loads one): "
                "its metrics are left out"
            )
            return False
        return None

    def compute(self, ctx: PassContext) -> tuple[dict[str, float], ShiftResult]:
        (head_logits,) = ctx.captured["logits"]  # 1 x N x vocab (the output head's, before any soft-cap)
        evaluated = softcapped(head_logits[0, -ctx.n_targets :].float(), ctx.model)
        reference = ctx.resources[REFERENCE]
        result = distribution_shift(
            evaluated, target_logits(reference, ctx.prompt.tolist(), ctx.target.tolist())
        )
        metrics = {
            REFERENCE_KL: result.mean_kl,
            REFERENCE_KL_FIRST: result.kl[0],
            TOKEN_SHIFT_SHIFTED: result.shifted_fraction,
            TOKEN_SHIFT_MARGINAL: result.marginal_fraction,
            TOP_TOKEN_AGREEMENT: result.top_agreement,
        }
        if result.first_divergence is not None:
            metrics[REFERENCE_FIRST_DIVERGENCE] = float(result.first_divergence)
        return metrics, result
