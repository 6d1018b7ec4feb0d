"""Contrastive attribution for multiple choice (Yin & Neubig, EMNLP 2022; `methods.contrastive`): why the
model prefers the gold answer over its strongest alternative, or, when it is wrong, the answer it chose over
the gold one. The foil (the best other choice of the same document, found by interp-hf from lm-eval's scores,
`harness.choices`) rides in the primary attribution's own pass (`PassContext.foil`): its first token is read
from the logits that predict the gold's first token, a longer foil's other tokens are forwarded on the
prompt's key/value cache, and its gradient is one more row of the pass's batched backward; the gold term is
the pass's own matrix. Where the pass could not carry it (forward mode, a sliding-window cache, a float32
re-run: `PassContext.foil_skipped`) the foil costs one forward and one backward of its own, and the detail's
``route`` says which.

Metrics: ``contrastive_margin`` (log p(gold) - log p(foil), nats), ``contrastive_share_<part>`` (the share of
the contrastive density per prompt part) and ``contrastive_instruction_importance`` (the paper's form of the
score on the contrastive density: its sum over instruction tokens / log2(2 + their number)). Only gold
requests of multiple-choice documents have a foil; the others are left out with a note. Opt-in:
``interp_signals=contrastive``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...methods.contrastive import (
    ContrastiveResult,
    contrast_with_gold_term,
    contrastive_density,
    contrastive_gradient_x_input,
    contrastive_shares,
    gold_term,
)
from ...metric_names import MetricSpec, register_metric
from ..context import PassContext
from ..registry import BaseSignal, register_signal

#: `PassContext.resources` key of the request's foil token ids (`harness.choices.foils`)
FOIL = "foil"

CONTRASTIVE_MARGIN = register_metric(
    MetricSpec(
        "contrastive_margin",
        "nats",
        "nats",
        "log p(gold) - log p(best other choice): positive when the model prefers the gold answer",
    )
).name
CONTRASTIVE_SHARE_PREFIX = register_metric(
    MetricSpec(
        "contrastive_share_",
        "shares",
        "share of the example's mass (0-1)",
        "share of the contrastive density (gold over best other choice) on each prompt part",
        bounds=(0.0, 1.0),
        placeholder="part",
    )
).name
CONTRASTIVE_INSTRUCTION_IMPORTANCE = register_metric(
    MetricSpec(
        "contrastive_instruction_importance",
        "score",
        "density (0 .. number of instruction tokens / log2(2 + that number))",
        "the contrastive density summed over instruction tokens / log2(2 + their number)",
        bounds=(0.0, None),
        bounded_by_prompt=True,
    )
).name


@dataclass
class ContrastiveDetail:
    raw: list[float]
    density: list[float]
    logprob_gold: float
    logprob_foil: float
    foil_tokens: int
    route: str = "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw": self.raw,
            "density": self.density,
            "logprob_gold": self.logprob_gold,
            "logprob_foil": self.logprob_foil,
            "margin": self.logprob_gold - self.logprob_foil,
            "foil_tokens": self.foil_tokens,
            "route": self.route,
        }


@register_signal
class Contrastive(BaseSignal):
    """Gold over the best other choice, onto the prompt (one more row of the pass's backward)."""

    name = "contrastive"
    order = 72

    def prepare(self, ctx: PassContext):
        if FOIL not in ctx.resources:
            ctx.notes.append(
                "contrastive: no other choice to contrast with (not a multiple-choice gold answer)"
            )
            return False
        ctx.foil = torch.as_tensor(list(ctx.resources[FOIL]), dtype=torch.long)
        return None

    def compute(self, ctx: PassContext) -> tuple[dict[str, float], ContrastiveDetail]:
        foil = list(ctx.resources[FOIL])
        prompt = ctx.prompt.tolist()
        logprobs = ctx.target_logprobs.numpy()
        shared = ctx.foil_output
        route = "pass"
        if shared is not None:
            result = ContrastiveResult(
                raw=(shared.gold_raw.double() - shared.raw.double()).numpy(),
                logprob_gold=float(logprobs.sum()),
                logprob_foil=shared.logprob,
            )
        else:
            ctx.notes.append(f"contrastive: the foil had its own forward and backward ({ctx.foil_skipped})")
            term = gold_term(ctx.raw, logprobs, ctx.settings.objective)
            if term is None:  # a gold token's p underflowed: the full two-answer contrast
                route = "two_answers"
                result = contrastive_gradient_x_input(ctx.model, prompt, ctx.target.tolist(), foil)
            else:
                route = "separate_foil"
                result = contrast_with_gold_term(ctx.model, prompt, term, float(logprobs.sum()), foil)
        density = contrastive_density(result.raw, L=ctx.settings.L, eps=ctx.settings.eps)
        metrics = {CONTRASTIVE_MARGIN: result.margin}
        for part, share in (contrastive_shares(density, ctx.labels) or {}).items():
            metrics[CONTRASTIVE_SHARE_PREFIX + part] = share
        if ctx.has_instruction and density.sum() > 0:
            count = int(ctx.mask.sum())
            metrics[CONTRASTIVE_INSTRUCTION_IMPORTANCE] = float(
                density[ctx.mask].sum() / math.log2(2 + count)
            )
        detail = ContrastiveDetail(
            result.raw.tolist(),
            np.asarray(density).tolist(),
            result.logprob_gold,
            result.logprob_foil,
            len(foil),
            route,
        )
        return metrics, detail
