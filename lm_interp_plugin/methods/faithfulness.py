"""Deletion curves: does an attribution's ranking of prompt tokens find the tokens the answer needs?

An attribution method is faithful to the extent that deleting the tokens it ranks highest hurts the target
most. `deletion_curve` deletes (or overwrites) prompt tokens in order of decreasing score, in steps of a
fraction of the deletable tokens, and records the target log-probability ``sum_n log p(y_n | x, y_<n)`` after
each step. The same is done for seeded random orders, so a user sees whether the method beats chance.

Summary (``area``): the area under ``logp(f) - logp_full`` over the deleted fraction ``f`` in [0, 1]
(trapezoid rule on the steps taken), in nats. It is normalised by the x axis: the mean change of the target
log-probability over the deletion, comparable across prompt lengths. Lower (more negative) is better: the
ranking found the tokens that matter sooner. ``random_area`` is the mean over random orders, and
``area_gain = random_area - area`` is positive when the method beats random.

Protected tokens are never deleted: by default the BOS (position 0 when it equals the config's
``bos_token_id``), because removing it moves every model off its training distribution whatever the ranking.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lm_interp_plugin.methods.ablation import check_request, target_logprobs

logger = logging.getLogger(__name__)

__all__ = ["DeletionCurve", "curve_area", "default_protect_mask", "deletion_curve"]


@dataclass
class DeletionCurve:
    """A deletion curve of one ranking, with the random-order baseline.

    Attributes:
        fractions: deleted share of the deletable tokens at each step, ``[steps]``, from 0 to 1.
        counts: number of tokens deleted at each step, ``[steps]``.
        order: deletable prompt positions in the order they are deleted (decreasing score).
        logprobs: target log-probability after each step, ``[steps]`` (``logprobs[0]`` = full prompt).
        area: trapezoid area of ``logprobs - logprobs[0]`` over `fractions` (nats; lower = better).
        random_logprobs: ``[n_random, steps]``, the same for seeded random orders.
        random_areas: ``[n_random]``.
        random_area: mean of `random_areas` (None when ``n_random == 0``, as are the next three).
        random_area_std: their standard deviation (0 for a single order).
        area_gain: ``random_area - area``; positive = the ranking beats random.
        beats_random: ``area < random_area``.
        replace_with: ``"remove"`` or the replacement token id.
        protected: the prompt positions never deleted.
        seed: the seed of the random orders.
    """

    fractions: torch.Tensor
    counts: torch.Tensor
    order: torch.Tensor
    logprobs: torch.Tensor
    area: float
    random_logprobs: torch.Tensor
    random_areas: torch.Tensor
    random_area: float | None
    random_area_std: float | None
    area_gain: float | None
    beats_random: bool | None
    replace_with: str | int
    protected: list[int]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists and floats), for a record's ``extras``."""
        return {
            f.name: (v.tolist() if isinstance(v, torch.Tensor) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }


def curve_area(fractions: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of ``logprobs - logprobs[..., :1]`` over `fractions` (last dimension = steps)."""
    drop = logprobs.double() - logprobs[..., :1].double()
    return torch.trapezoid(drop, fractions.double(), dim=-1)


def default_protect_mask(model: torch.nn.Module, prompt_ids: torch.Tensor) -> torch.Tensor:
    """True at position 0 when it is the model's BOS token (``config.bos_token_id``), else all False."""
    mask = torch.zeros(prompt_ids.numel(), dtype=torch.bool)
    bos = getattr(getattr(model, "config", None), "bos_token_id", None)
    if isinstance(bos, int) and int(prompt_ids[0]) == bos:
        mask[0] = True
    return mask


def _fractions(fraction_steps: int | Sequence[float]) -> torch.Tensor:
    if isinstance(fraction_steps, int) and not isinstance(fraction_steps, bool):
        if fraction_steps < 1:
            raise ValueError(
                f"fraction_steps must be >= 1 (steps between 0 and all deleted); got {fraction_steps}."
            )
        return torch.linspace(0, 1, fraction_steps + 1, dtype=torch.float64)
    values = torch.tensor(list(fraction_steps), dtype=torch.float64)
    if values.numel() == 0 or bool((values < 0).any() or (values > 1).any()):
        raise ValueError(
            f"fraction_steps must be an int or fractions in [0, 1]; got {list(fraction_steps)!r}."
        )
    return torch.unique(torch.cat([torch.zeros(1, dtype=torch.float64), values]))


def _edit(prompt: torch.Tensor, deleted: torch.Tensor, replace_with: str | int) -> torch.Tensor:
    if replace_with == "remove":
        keep = torch.ones(prompt.numel(), dtype=torch.bool)
        keep[deleted] = False
        return prompt[keep]
    edited = prompt.clone()
    edited[deleted] = int(replace_with)
    return edited


def deletion_curve(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    target_ids: torch.Tensor,
    scores: torch.Tensor,
    fraction_steps: int | Sequence[float] = 10,
    replace_with: str | int = "remove",
    protect_mask: torch.Tensor | None = None,
    n_random: int = 8,
    seed: int = 0,
    batch_size: int = 16,
) -> DeletionCurve:
    """Delete prompt tokens by decreasing `scores` and track the target log-probability; compare with random.

    Args:
        model: any HF-style causal LM (``model(input_ids=..., attention_mask=...).logits``).
        prompt_ids: LongTensor[M], BOS included where the tokenizer adds one.
        target_ids: LongTensor[N].
        scores: ``[prompt_len]`` importance per prompt token (e.g. the paper's density a_m, or
            `IGResult.prompt_scores()`); ties are deleted left to right.
        fraction_steps: number of equal steps from 0 to all deletable tokens, or explicit fractions in [0, 1]
            (0 is added). Counts are ``round(fraction * deletable)``.
        replace_with: ``"remove"`` (delete, positions re-indexed) or a token id written over each token.
        protect_mask: BoolTensor[M] of positions never deleted; default `default_protect_mask` (the BOS). In
            ``"remove"`` mode with nothing protected, the last step keeps one token (the lowest-ranked), since
            an empty prompt cannot be scored.
        n_random: random orders for the baseline (0 to skip; then the random fields are None / empty).
        seed: seed of the random orders (a private generator; global RNG untouched).
        batch_size: most sequences per forward pass.

    Returns:
        A `DeletionCurve`.
    """
    check_request(model, prompt_ids, target_ids, "deletion_curve")
    prompt, target = prompt_ids.cpu(), target_ids.cpu()
    m = prompt.numel()
    if not isinstance(scores, torch.Tensor) or scores.shape != (m,):
        raise ValueError(
            f"scores must be a tensor with one value per prompt token ({m},); got "
            f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}. "
            "For an attribution matrix (prompt_len x target_len) pass its row sums or the density a_m."
        )
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN; rank with finite values (replace NaN by -inf to delete last).")
    if replace_with != "remove":
        vocab = model.get_input_embeddings().weight.shape[0]
        if (
            isinstance(replace_with, bool)
            or not isinstance(replace_with, int)
            or not 0 <= replace_with < vocab
        ):
            raise ValueError(
                f"replace_with must be 'remove' or a token id in [0, {vocab}); got {replace_with!r}."
            )
    if protect_mask is None:
        protect_mask = default_protect_mask(model, prompt)
    elif not isinstance(protect_mask, torch.Tensor) or protect_mask.shape != (m,):
        raise ValueError(f"protect_mask must be a BoolTensor with one entry per prompt token ({m},).")
    protect_mask = protect_mask.to(torch.bool).cpu()
    candidates = torch.nonzero(~protect_mask).flatten()
    if candidates.numel() == 0:
        raise ValueError("protect_mask protects every prompt token; nothing is left to delete.")
    if not isinstance(n_random, int) or n_random < 0:
        raise ValueError(f"n_random must be an integer >= 0; got {n_random!r}.")

    fractions = _fractions(fraction_steps)
    counts = torch.round(fractions * candidates.numel()).long()
    counts = torch.unique(counts)  # fine grids on short prompts repeat counts
    fractions = counts.double() / candidates.numel()
    if replace_with == "remove" and int(counts[-1]) >= m:
        logger.warning(
            "deletion_curve: nothing protected; the last step keeps one prompt token to stay scorable"
        )
        counts[-1] = m - 1

    ranked = torch.sort(scores.detach().cpu().double()[candidates], descending=True, stable=True).indices
    orders = [candidates[ranked]]
    generator = torch.Generator().manual_seed(seed)
    orders += [candidates[torch.randperm(candidates.numel(), generator=generator)] for _ in range(n_random)]

    requests = [(_edit(prompt, order[: int(c)], replace_with), target) for order in orders for c in counts]
    totals = torch.stack([lp.sum() for lp in target_logprobs(model, requests, batch_size=batch_size)])
    curves = totals.double().reshape(len(orders), counts.numel())

    area = float(curve_area(fractions, curves[0]))
    random_areas = curve_area(fractions, curves[1:]) if n_random else torch.zeros(0, dtype=torch.float64)
    random_area = float(random_areas.mean()) if n_random else None
    random_std = float(random_areas.std(unbiased=False)) if n_random else None
    return DeletionCurve(
        fractions=fractions,
        counts=counts,
        order=orders[0],
        logprobs=curves[0],
        area=area,
        random_logprobs=curves[1:],
        random_areas=random_areas,
        random_area=random_area,
        random_area_std=random_std,
        area_gain=random_area - area if random_area is not None else None,
        beats_random=bool(area < random_area) if random_area is not None else None,
        replace_with=replace_with,
        protected=torch.nonzero(protect_mask).flatten().tolist(),
        seed=seed,
    )
