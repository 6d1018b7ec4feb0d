"""Next-token entropy: how spread the model's next-token distribution is where it predicts the target.

At each target position n, H_n = -sum_v p(v | x, y_<n) log p(v | x, y_<n) (nats, float32, from the logits of
the pass's primal forward: no extra forward); the metric is the mean over the target positions. Opt-in:
``interp_signals=entropy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...metric_names import MetricSpec, register_metric
from ..context import PassContext
from ..registry import BaseSignal, register_signal

NEXT_TOKEN_ENTROPY = register_metric(
    MetricSpec(
        "next_token_entropy",
        "nats",
        "nats (0 = certain; at most log of the vocabulary size)",
        "entropy of the model's next-token distribution at each target position, averaged",
        bounds=(0.0, None),
    )
).name


@dataclass
class EntropyDetail:
    """H_n per target position (nats)."""

    per_token: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"per_token": self.per_token}


@register_signal
class NextTokenEntropy(BaseSignal):
    name = "entropy"
    order = 60
    needs = ("logits",)

    def compute(self, ctx: PassContext) -> tuple[dict[str, float], EntropyDetail]:
        (logits,) = ctx.activations("logits")  # 1 x target_len x vocab
        logp = logits[0, -ctx.n_targets :].float().log_softmax(-1)
        per_token = (-(logp.exp() * logp).sum(-1)).clamp_min(0.0)  # >= 0; clamps float rounding only
        return {NEXT_TOKEN_ENTROPY: float(per_token.mean())}, EntropyDetail(per_token.tolist())
