"""Instruction ablation: how much does the target's log-probability fall without the instruction?

Gradient x input asks a local question (the derivative along each embedding's own direction); in pre-norm
models the first layer normalises every embedding, so that derivative can miss what the first layer reads and
the paper's score can stay flat while the model plainly follows its instructions (issue 8). Ablation asks the
behavioural question directly: score the same target with the instruction span

* **removed** -- the span's tokens deleted, the rest of the prompt shifted left (positions re-indexed), and
* **replaced** -- the span overwritten by a neutral token of the same length (positions unchanged),

and report the drop ``original - ablated`` in nats, in total and per target token (positive = the
instruction helped). The target log-probability is ``sum_n log p(y_n | x, y_<n)``.

All sequences of a call (three per request) run as right-padded batches of at most ``batch_size`` rows. With
right padding and an attention mask, a causal model's real tokens keep the positions ``0..len-1`` they have
unpadded and never attend to the pads after them, so padding does not change any log-probability (tested).

Shapes: ``prompt_len`` (M) prompt tokens, BOS included where the tokenizer adds one; ``target_len`` (N).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .model_state import eval_mode
from .scoring import forward_kwargs, padded_logprobs

logger = logging.getLogger(__name__)

__all__ = [
    "AblationResult",
    "check_request",
    "forward_kwargs",
    "instruction_ablation",
    "model_device",
    "target_logprobs",
]


# --------------------------------------------------------------------------------------------------------
# helpers shared by the faithful methods (ablation, integrated gradients, deletion curves)
# --------------------------------------------------------------------------------------------------------


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's input embeddings (where input ids and embeddings must go)."""
    return model.get_input_embeddings().weight.device


def _vocab_size(model: torch.nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


def _max_positions(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_request(
    model: torch.nn.Module, prompt_ids: torch.Tensor, target_ids: torch.Tensor, what: str = "request"
) -> None:
    """Raise one clear `ValueError` if (prompt_ids, target_ids) cannot be scored by `model`."""
    for name, ids in (("prompt_ids", prompt_ids), ("target_ids", target_ids)):
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype != torch.long:
            raise ValueError(
                f"{what}: {name} must be a 1-D LongTensor of token ids; got "
                f"{type(ids).__name__}{tuple(ids.shape) if isinstance(ids, torch.Tensor) else ''}"
                f"{' ' + str(ids.dtype) if isinstance(ids, torch.Tensor) else ''}. Pass "
                "tokenizer(...).input_ids[0]."
            )
        if ids.numel() == 0:
            raise ValueError(
                f"{what}: {name} is empty; the prompt needs at least one token (its BOS) and the target at "
                "least one token to score."
            )
        vocab = _vocab_size(model)
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise ValueError(
                f"{what}: {name} holds ids outside the model's vocabulary [0, {vocab}); was it tokenised "
                "with "
                "this model's tokenizer?"
            )
    limit = _max_positions(model)
    total = prompt_ids.numel() + target_ids.numel()
    if limit is not None and total > limit:
        raise ValueError(
            f"{what}: prompt ({prompt_ids.numel()}) + target ({target_ids.numel()}) = {total} tokens exceeds "
            "the "
            f"model's {limit} positions; truncate the prompt from the left or use fewer few-shot examples."
        )


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 (rows per forward pass); got {batch_size!r}.")


def _pad_fill(model: torch.nn.Module) -> int:
    pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    return pad if isinstance(pad, int) and 0 <= pad < _vocab_size(model) else 0


def target_logprobs(
    model: torch.nn.Module,
    requests: Sequence[tuple[torch.Tensor, torch.Tensor]],
    batch_size: int = 16,
) -> list[torch.Tensor]:
    """Per-token target log-probabilities ``log p(y_n | x, y_<n)`` for many (prompt, target) pairs.

    Sequences run as right-padded batches of at most `batch_size` rows (grouped by length, so little is
    wasted on padding); a row's real tokens keep their unpadded positions, so results equal single runs.

    Args:
        model: any HF-style causal LM: ``model(input_ids=..., attention_mask=...)`` returns ``.logits``.
        requests: (prompt_ids LongTensor[M], target_ids LongTensor[N]) pairs.
        batch_size: most sequences per forward pass; memory grows with it times length times vocabulary.

    Returns:
        One float32 CPU tensor ``[target_len]`` per request, in the order given.
    """
    _check_batch_size(batch_size)
    device = model_device(model)
    fill = _pad_fill(model)
    out: list[torch.Tensor | None] = [None] * len(requests)
    order = sorted(range(len(requests)), key=lambda i: -(requests[i][0].numel() + requests[i][1].numel()))
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            scored = padded_logprobs(model, [requests[i] for i in chunk], fill, device)
            for i, logprobs in zip(chunk, scored):
                out[i] = logprobs
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------
# instruction ablation
# --------------------------------------------------------------------------------------------------------


@dataclass
class AblationResult:
    """Target log-probabilities with and without the instruction (nats; drops positive = it helped).

    Attributes:
        logprob_original: ``sum_n log p(y_n | x, y_<n)`` with the prompt as given.
        logprob_removed: the same with the instruction tokens deleted (positions re-indexed).
        logprob_replaced: the same with every instruction token replaced by `neutral_token_id`.
        drop_removed: ``logprob_original - logprob_removed``.
        drop_replaced: ``logprob_original - logprob_replaced``.
        token_logprobs_original / _removed / _replaced: per target token (``[target_len]``).
        token_drops_removed / _replaced: per target token, original minus ablated.
        instruction_len: number of instruction tokens ablated.
        neutral_token_id: the token used for the replacement.
    """

    logprob_original: float
    logprob_removed: float
    logprob_replaced: float
    drop_removed: float
    drop_replaced: float
    token_logprobs_original: torch.Tensor
    token_logprobs_removed: torch.Tensor
    token_logprobs_replaced: torch.Tensor
    token_drops_removed: torch.Tensor
    token_drops_replaced: torch.Tensor
    instruction_len: int
    neutral_token_id: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists and floats), for a record's ``extras``."""
        return {
            f.name: (v.tolist() if isinstance(v, torch.Tensor) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }


def _neutral_id(model: torch.nn.Module, neutral_token_id: int | None) -> int:
    if neutral_token_id is None:
        neutral_token_id = getattr(getattr(model, "config", None), "pad_token_id", None)
        if neutral_token_id is None:
            raise ValueError(
                "neutral_token_id is None and the model's config has no pad_token_id; pass "
                "neutral_token_id=tokenizer.pad_token_id (or any token that carries no instruction, e.g. a "
                "space)."
            )
    if not isinstance(neutral_token_id, int) or not 0 <= neutral_token_id < _vocab_size(model):
        raise ValueError(
            f"neutral_token_id must be a token id in [0, {_vocab_size(model)}); got {neutral_token_id!r}."
        )
    return neutral_token_id


def _check_mask(prompt_ids: torch.Tensor, mask: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dim() != 1 or mask.numel() != prompt_ids.numel():
        raise ValueError(
            f"{what}: instruction_mask must be a 1-D BoolTensor with one entry per prompt token "
            f"({prompt_ids.numel()}); got "
            f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask)}."
        )
    mask = mask.to(torch.bool).cpu()
    if not bool(mask.any()):
        raise ValueError(
            f"{what}: instruction_mask selects no prompt token; there is no instruction to ablate (check the "
            "instruction span's character offsets)."
        )
    if bool(mask.all()):
        raise ValueError(
            f"{what}: instruction_mask covers the whole prompt, so removing it leaves nothing to condition "
            "on; "
            "leave at least the BOS token outside the mask."
        )
    return mask


def _ablate_variants(
    prompt_ids: torch.Tensor, mask: torch.Tensor, neutral: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    removed = prompt_ids[~mask]
    replaced = prompt_ids.clone()
    replaced[mask] = neutral
    return prompt_ids, removed, replaced


def instruction_ablation(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor | Sequence[torch.Tensor],
    target_ids: torch.Tensor | Sequence[torch.Tensor],
    instruction_mask: torch.Tensor | Sequence[torch.Tensor],
    neutral_token_id: int | None = None,
    batch_size: int = 16,
    original_logprobs: torch.Tensor | None = None,
) -> AblationResult | list[AblationResult]:
    """Score the target with the instruction as given, removed, and replaced by a neutral span.

    Args:
        model: any HF-style causal LM (``model(input_ids=..., attention_mask=...).logits``).
        prompt_ids: LongTensor[M] (BOS included where the tokenizer adds one), or a list of them for a batch.
        target_ids: LongTensor[N], or a list matching `prompt_ids`.
        instruction_mask: BoolTensor[M], True on instruction tokens (several spans allowed), or a list.
        neutral_token_id: the replacement token. Default: the model config's ``pad_token_id`` (which the
            tokenizer's pad token matches for models saved with their tokenizer); a model without one needs it
            given, e.g. ``tokenizer.pad_token_id`` or the id of a space.
        batch_size: most sequences per forward pass (each request contributes three).
        original_logprobs: for a single request, its per-token target log-probabilities as already scored
            with the prompt as given (the attribution pass has them): then only the two ablated sequences
            run. Same model, same dtype, or the drop mixes precisions.

    Returns:
        One `AblationResult`, or a list of them when lists were given.

    Raises:
        ValueError: on malformed ids or masks, an empty or all-covering mask, or a missing neutral token.
    """
    single = isinstance(prompt_ids, torch.Tensor)
    prompts = [prompt_ids] if single else list(prompt_ids)
    targets = [target_ids] if isinstance(target_ids, torch.Tensor) else list(target_ids)
    masks = [instruction_mask] if isinstance(instruction_mask, torch.Tensor) else list(instruction_mask)
    if not (len(prompts) == len(targets) == len(masks)) or (single and len(targets) != 1):
        raise ValueError(
            "prompt_ids, target_ids and instruction_mask must all be single tensors or lists of equal "
            "length; "
            f"got {len(prompts)}, {len(targets)}, {len(masks)}."
        )
    neutral = _neutral_id(model, neutral_token_id)
    if original_logprobs is not None and not single:
        raise ValueError("original_logprobs applies to a single request; got lists of requests")
    sequences: list[tuple[torch.Tensor, torch.Tensor]] = []
    sizes = []
    for r, (prompt, target, mask) in enumerate(zip(prompts, targets, masks)):
        what = "request" if single else f"request {r}"
        check_request(model, prompt, target, what)
        prompt, target = prompt.cpu(), target.cpu()
        mask = _check_mask(prompt, mask, what)
        variants = _ablate_variants(prompt, mask, neutral)
        if original_logprobs is not None:
            if original_logprobs.shape != target.shape:
                raise ValueError(
                    f"original_logprobs has shape {tuple(original_logprobs.shape)}; the target has "
                    f"{target.numel()} tokens"
                )
            variants = variants[1:]
        sequences.extend((variant, target) for variant in variants)
        sizes.append(int(mask.sum()))
    scored = target_logprobs(model, sequences, batch_size=batch_size)
    if original_logprobs is not None:
        scored = [original_logprobs.detach().float().cpu(), *scored]
    results = []
    for r, size in enumerate(sizes):
        orig, removed, replaced = scored[3 * r : 3 * r + 3]
        results.append(
            AblationResult(
                logprob_original=float(orig.sum()),
                logprob_removed=float(removed.sum()),
                logprob_replaced=float(replaced.sum()),
                drop_removed=float(orig.sum() - removed.sum()),
                drop_replaced=float(orig.sum() - replaced.sum()),
                token_logprobs_original=orig,
                token_logprobs_removed=removed,
                token_logprobs_replaced=replaced,
                token_drops_removed=orig - removed,
                token_drops_replaced=orig - replaced,
                instruction_len=size,
                neutral_token_id=neutral,
            )
        )
    return results[0] if single else results
