"""Contrastive attribution for multiple choice (Yin & Neubig, "Interpreting Language Models with Contrastive
Explanations", EMNLP 2022).

Why did the model prefer the gold answer over its strongest alternative (or, when it is wrong, the answer it
chose over the gold one)? Gradient x input of the contrast

    c[m] = < d (log p(gold | x) - log p(foil | x)) / d e_m , e_m >,

with log p(answer | x) the sum of the answer tokens' log-probabilities (as lm-eval scores a choice) and e_m
the embedding of prompt token m. Positive c[m]: token m pushes toward the gold answer and away from the foil.

Both answers are scored in one right-padded two-row forward whose prompt rows share one embedding leaf, and
the contrast is one backward of one scalar (one VJP), not one per choice or per target token. Inside the
interpretation pass the gold half is already there: the pass's gradient x input matrix of the gold
continuation, its columns summed (divided by p_n for the ``prob`` objective), is the gold term
(`gold_term`), so only the foil costs a forward and a backward (`contrast_with_gold_term`). Cheaper still,
the pass can carry the foil itself (`attribution.gradient_x_input`'s ``foil_ids``): its tokens scored in the
pass's forward (the prompt's key/value cache) and its gradient one more row of the pass's batched backward;
the interpretation pass does that wherever it can and uses `contrast_with_gold_term` elsewhere.

Density and shares: with a single column the paper's ``L1 / Lp`` density is an indicator (every surviving row
has one non-zero entry), so the contrastive density keeps the quantised levels instead: ``S[m] / L`` with
``S = ceil(L * relu(c) / (max relu(c) + eps))`` (`importance.quantise` of the one column), 1 on the strongest
token; its share per prompt part is the part's density over the total.

Shapes: ``prompt_len`` (M) contrast values, answers of any lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .importance import quantise
from .model_state import inputs_only_grad
from .scoring import last_positions_logprobs


class ContrastiveError(ValueError):
    """A contrast that cannot be computed (empty prompt or answer, gold equal to the foil)."""


@dataclass
class ContrastiveResult:
    """The contrastive attribution of one multiple-choice item.

    Attributes:
        raw: c, one float per prompt token (``prompt_len``).
        logprob_gold / logprob_foil: the two answers' log-probabilities (summed over their tokens).
    """

    raw: np.ndarray
    logprob_gold: float
    logprob_foil: float

    @property
    def margin(self) -> float:
        """log p(gold) - log p(foil): positive when the model prefers the gold answer."""
        return self.logprob_gold - self.logprob_foil


def contrastive_gradient_x_input(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    gold_ids: Sequence[int],
    foil_ids: Sequence[int],
) -> ContrastiveResult:
    """c[m] = gradient x input of ``log p(gold) - log p(foil)`` onto each prompt token (one backward)."""
    prompt = torch.as_tensor(list(prompt_ids), dtype=torch.long)
    answers = [torch.as_tensor(list(a), dtype=torch.long) for a in (gold_ids, foil_ids)]
    if len(prompt) == 0 or any(len(a) == 0 for a in answers):
        raise ContrastiveError("the prompt and both answers must be non-empty token id lists")
    if torch.equal(answers[0], answers[1]):
        raise ContrastiveError("the gold answer and the foil are the same tokens: nothing to contrast")
    device = model.get_input_embeddings().weight.device
    prompt_len = len(prompt)
    width = prompt_len + max(len(a) for a in answers) - 1
    embed = model.get_input_embeddings()
    with inputs_only_grad(model):
        with torch.no_grad():
            prompt_embeds = embed(prompt[None].to(device))
        leaf = prompt_embeds.clone().requires_grad_(True)
        rows, mask = [], torch.zeros((2, width), dtype=torch.long)
        ids = prompt[None].repeat(2, 1)
        ids = torch.cat([ids, ids.new_zeros((2, width - prompt_len))], dim=1)  # masked padding: id 0
        for row, answer in enumerate(answers):
            with torch.no_grad():
                tail = embed(answer[:-1][None].to(device))
            pad = width - prompt_len - tail.shape[1]
            filler = tail.new_zeros((1, pad, tail.shape[2]))
            rows.append(torch.cat([leaf, tail, filler], dim=1))  # the leaf is shared by both rows
            mask[row, : prompt_len + len(answer) - 1] = 1
            ids[row, prompt_len : prompt_len + len(answer) - 1] = answer[:-1]
        longest = max(len(a) for a in answers)
        targets = torch.zeros((2, longest), dtype=torch.long)  # right-padded; the padding is not summed
        for row, answer in enumerate(answers):
            targets[row, : len(answer)] = answer
        # the LM head only at the last `longest` positions: those that predict the answers' tokens
        logprobs, _ = last_positions_logprobs(
            model, torch.cat(rows), targets.to(device), attention_mask=mask.to(device), input_ids=ids
        )
        sums = [logprobs[row, : len(answer)].sum() for row, answer in enumerate(answers)]
        contrast = sums[0] - sums[1]
        (grad,) = torch.autograd.grad(contrast, leaf)
    raw = (grad[0].float() * leaf.detach()[0].float()).sum(-1)
    return ContrastiveResult(
        raw=raw.cpu().numpy().astype(np.float64),
        logprob_gold=float(sums[0].detach()),
        logprob_foil=float(sums[1].detach()),
    )


def gold_term(raw: np.ndarray, target_logprobs: np.ndarray, objective: str) -> np.ndarray | None:
    """``< d log p(gold) / d e_m, e_m >`` from the pass's matrix of the gold continuation
    (``prompt_len x N``): the sum of its columns, each divided by p_n when the matrix is of probabilities
    (``prob``). None when a p_n underflowed to 0 in float32 (the column cannot be rescaled; compute the
    contrast in full)."""
    columns = np.asarray(raw, dtype=np.float64)
    if objective == "logprob":
        return columns.sum(axis=1)
    p = np.exp(np.asarray(target_logprobs, dtype=np.float64))
    if columns.shape[1] != len(p) or not np.all(np.exp(np.asarray(target_logprobs, np.float32)) > 0):
        return None
    return (columns / p[None, :]).sum(axis=1)


def contrast_with_gold_term(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    gold: np.ndarray,
    logprob_gold: float,
    foil_ids: Sequence[int],
) -> ContrastiveResult:
    """The contrast from the pass's gold term (`gold_term`) and one forward + backward of the foil."""
    prompt = torch.as_tensor(list(prompt_ids), dtype=torch.long)
    foil = torch.as_tensor(list(foil_ids), dtype=torch.long)
    if len(prompt) == 0 or len(foil) == 0 or len(gold) != len(prompt):
        raise ContrastiveError(
            f"prompt ({len(prompt)} tokens), foil ({len(foil)}) and gold term ({len(gold)}) must be "
            "non-empty and the gold term one value per prompt token"
        )
    device = model.get_input_embeddings().weight.device
    embed = model.get_input_embeddings()
    with inputs_only_grad(model):
        sequence_ids = torch.cat([prompt, foil[:-1]])[None].to(device)
        with torch.no_grad():
            embeds = embed(sequence_ids)
        leaf = embeds[:, : len(prompt)].clone().requires_grad_(True)
        logprobs, _ = last_positions_logprobs(
            model,
            torch.cat([leaf, embeds[:, len(prompt) :]], dim=1),
            foil[None].to(device),
            input_ids=sequence_ids,
        )
        score = logprobs.sum()
        (grad,) = torch.autograd.grad(score, leaf)
    foil_term = (grad[0].float() * leaf.detach()[0].float()).sum(-1).cpu().numpy().astype(np.float64)
    return ContrastiveResult(
        raw=np.asarray(gold, dtype=np.float64) - foil_term,
        logprob_gold=float(logprob_gold),
        logprob_foil=float(score.detach()),
    )


def best_other_choice(logprobs: Sequence[float], gold: int) -> int:
    """The foil: the highest-scoring choice other than `gold` (lm-eval's ``acc`` picks the argmax of the same
    summed log-probabilities, so when the model is wrong this is the choice it picked)."""
    if not 0 <= gold < len(logprobs) or len(logprobs) < 2:
        raise ContrastiveError(
            f"gold index {gold} with {len(logprobs)} choices: need >= 2 choices and a valid gold"
        )
    others = [(score, i) for i, score in enumerate(logprobs) if i != gold]
    return max(others)[1]


def contrastive_density(raw: np.ndarray, L: int = 10, eps: float = 1e-7) -> np.ndarray:
    """The contrastive importance density ``S[m] / L`` in [0, 1] (see the module docstring)."""
    column = np.asarray(raw, dtype=np.float64).reshape(-1, 1)
    return quantise(column, L=L, eps=eps)[:, 0] / L


def contrastive_shares(density: np.ndarray, labels: Sequence[str]) -> dict[str, float] | None:
    """Share of the contrastive density on each prompt part (parts in order of first appearance); None when
    no token pushes toward the gold answer (no positive contrast: the shares are undefined, not 0)."""
    density = np.asarray(density, dtype=np.float64)
    if len(labels) != len(density):
        raise ContrastiveError(f"{len(labels)} part labels for {len(density)} prompt tokens")
    total = float(density.sum())
    if total <= 0:
        return None
    parts = np.asarray(list(labels), dtype=object)
    return {part: float(density[parts == part].sum() / total) for part in dict.fromkeys(labels)}
