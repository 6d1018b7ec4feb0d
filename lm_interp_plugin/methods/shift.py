"""Reference-model shift on the target tokens: how far the evaluated model's next-token distributions are
from a reference model's (its base when the tuned model is evaluated, or the other way round).

Three views, all at the target positions (the positions that predict the gold continuation, or the model's own
generation), from teacher-forced logits of the two models on the same token ids:

* KL(evaluated || reference) per position, ``sum_v p_e(v) (log p_e(v) - log p_r(v))``, and its mean: Qi et al.
  (ICLR 2025, arXiv 2406.05946) find it concentrated in the first few answer tokens;
* the token distribution shift of Lin et al. ("The Unlocking Spell on Base LLMs", arXiv 2312.01552): the rank
  of the evaluated model's top-1 token under the reference (0: unshifted, 1-2: marginal, >= 3: shifted) and
  the shifted fraction. On a model's own greedy generation the top-1 token is the generated token, which is
  Lin et al.'s setting; on a gold continuation it is the token the evaluated model would have chosen;
* the first position where the two models' top-1 tokens differ.

Shapes: ``target_len x vocab`` logits (N x V), ``target_len`` ids. Log-softmax and KL are taken in float64 on
the CPU: the KL of two nearly equal distributions is a small difference of large sums, and float32 would leave
rounding noise of about ``V * eps32`` in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .scoring import last_positions_logprobs

#: Lin et al.'s rank categories: rank 0 unshifted, 1..MARGINAL_MAX_RANK marginal, above it shifted.
MARGINAL_MAX_RANK = 2


class ShiftError(ValueError):
    """The two models' logits cannot be compared (shapes or vocabularies differ)."""


@dataclass
class ShiftResult:
    """The shift of one request's target positions.

    Attributes:
        kl: KL(evaluated || reference) per target position (nats), length N.
        ranks: rank under the reference of the evaluated model's top-1 token, per position (0 = the
            reference's top-1 too).
        evaluated_top: the evaluated model's top-1 token id per position.
        reference_top: the reference's top-1 token id per position.
        first_divergence: the first position whose two top-1 tokens differ, or None when they always agree.
    """

    kl: list[float]
    ranks: list[int]
    evaluated_top: list[int]
    reference_top: list[int]
    first_divergence: int | None

    @property
    def mean_kl(self) -> float:
        """Mean KL over the target positions."""
        return float(sum(self.kl) / len(self.kl))

    @property
    def shifted_fraction(self) -> float:
        """Share of positions whose token the reference ranks at 3 or worse (Lin et al.'s "shifted")."""
        return sum(r > MARGINAL_MAX_RANK for r in self.ranks) / len(self.ranks)

    @property
    def marginal_fraction(self) -> float:
        """Share of positions whose token the reference ranks 1 or 2 (Lin et al.'s "marginal")."""
        return sum(0 < r <= MARGINAL_MAX_RANK for r in self.ranks) / len(self.ranks)

    @property
    def top_agreement(self) -> float:
        """Share of positions where the two models' top-1 tokens agree."""
        return sum(r == 0 for r in self.ranks) / len(self.ranks)

    def categories(self) -> list[str]:
        """Lin et al.'s category per position: ``unshifted``, ``marginal`` or ``shifted``."""
        return [
            "unshifted" if r == 0 else "marginal" if r <= MARGINAL_MAX_RANK else "shifted" for r in self.ranks
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for a record's extras."""
        return {
            "kl": self.kl,
            "ranks": self.ranks,
            "evaluated_top": self.evaluated_top,
            "reference_top": self.reference_top,
            "first_divergence": self.first_divergence,
        }


def distribution_shift(evaluated_logits: Tensor, reference_logits: Tensor) -> ShiftResult:
    """KL, Lin et al.'s rank shift and the first top-1 divergence from the two models' target-position logits.

    Args:
        evaluated_logits: ``N x V`` logits of the evaluated model at the N target positions.
        reference_logits: ``N x V`` logits of the reference model at the same positions (same token ids fed).

    Ties in the reference's ranking count against the token (rank = number of tokens with a strictly larger
    logit), so an identical reference always gives rank 0.
    """
    if evaluated_logits.shape != reference_logits.shape or evaluated_logits.ndim != 2:
        raise ShiftError(
            f"evaluated logits {tuple(evaluated_logits.shape)} and reference logits "
            f"{tuple(reference_logits.shape)} must both be target_len x vocab of one size; the reference "
            "needs the evaluated model's tokenizer (same vocabulary)"
        )
    if evaluated_logits.shape[0] == 0:
        raise ShiftError("no target positions: the shift of an empty target is undefined")
    log_e = evaluated_logits.detach().to("cpu", torch.float64).log_softmax(-1)
    log_r = reference_logits.detach().to("cpu", torch.float64).log_softmax(-1)
    kl = (log_e.exp() * (log_e - log_r)).sum(-1).clamp_min(0.0)
    top_e = log_e.argmax(-1)
    top_r = log_r.argmax(-1)
    chosen = log_r.gather(-1, top_e[:, None])
    ranks = (log_r > chosen).sum(-1)
    differs = (top_e != top_r).nonzero()
    return ShiftResult(
        kl=[float(v) for v in kl],
        ranks=[int(r) for r in ranks],
        evaluated_top=[int(t) for t in top_e],
        reference_top=[int(t) for t in top_r],
        first_divergence=int(differs[0, 0]) if len(differs) else None,
    )


def target_logits(model: torch.nn.Module, prompt_ids: Sequence[int], target_ids: Sequence[int]) -> Tensor:
    """Teacher-forced logits ``N x V`` of `model` at the positions that predict `target_ids` (no gradients).

    One forward of ``prompt + target[:-1]``, the LM head only at the last N positions where the model allows
    it: the reference's cost per request.
    """
    prompt = torch.as_tensor(list(prompt_ids), dtype=torch.long)
    target = torch.as_tensor(list(target_ids), dtype=torch.long)
    if len(prompt) == 0 or len(target) == 0:
        raise ShiftError("target_logits needs a non-empty prompt and target")
    device = model.get_input_embeddings().weight.device
    ids = torch.cat([prompt, target[:-1]])[None].to(device)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        _, out = last_positions_logprobs(model, embeds, target[None].to(device), input_ids=ids)
    return out.logits[0, -len(target) :].detach()
