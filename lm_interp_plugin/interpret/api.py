"""The notebook-facing API: attribute one (prompt, target) pair with any Hugging Face causal LM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..spans import instruction_mask, label_tokens, locate_fields, token_offsets
from .builder import build_pass
from .encoding import encode_pair, prefix_token, tokenizer_encoder
from .registry import Detail
from .settings import InterpSettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class Attribution:
    """Gradient x input attribution of one target onto its prompt.

    Attributes:
        raw: I, ``prompt_len x target_len`` (numpy float32).
        prompt_tokens: the prompt as the model saw it (BOS included when the tokenizer adds one).
        target_tokens: the target tokens.
        token_parts: a part label per prompt token (``instruction`` where `instruction` was located).
        target_logprobs: log p of each target token given the prompt and the earlier targets.
        metrics: the per-example scalars, as interp-hf computes them (instruction importance, part shares,
            instruction attention, FFN concepts, ablation drops, and the opt-in ones asked for).
        attention: per layer x head instruction attention (when computed).
        ffn: per layer FFN concept activations and shares (when computed).
        details: each signal's typed detail, by signal name (``ablation``, ``ffn``, ``ig``, ...).
        notes: what happened that a reader should know (a float32 re-run after NaN in half precision, say).
        fp32_check: for half-precision models called with ``check_fp32=True``: the relative error against a
            float32 attribution of the same pair.
    """

    raw: np.ndarray
    prompt_tokens: list[str]
    target_tokens: list[str]
    token_parts: list[str]
    target_logprobs: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)
    attention: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fp32_check: dict[str, Any] | None = None
    ffn: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Detail] = field(default_factory=dict)

    @property
    def instruction_mask(self) -> np.ndarray:
        return instruction_mask(self.token_parts)


def attribute(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    target: str,
    instruction: str | Sequence[str] | None = None,
    check_fp32: bool = False,
    ffn_cache_dir: str | Path | None = None,
    **settings: Any,
) -> Attribution:
    """Gradient x input of every target token onto every prompt token (the paper's raw matrix).

    Args:
        model: any Hugging Face causal LM (on any device, any dtype).
        tokenizer: its tokenizer.
        prompt: the prompt text.
        target: the continuation to explain (e.g. the model's own response).
        instruction: the instruction text(s) inside `prompt`, to get the instruction metrics.
        check_fp32: half-precision models: also attribute in float32 and report the relative error.
        ffn_cache_dir: where the model's FFN components are cached (default ``~/.cache/lm_interp``, or
            ``$LM_INTERP_CACHE``); computed on the first call for a model's weights.
        **settings: `InterpSettings` fields (L, b, p, eps, objective, mode, chunk_size, memory_budget,
            checkpoint, attention, ffn, ablation, methods, signals, ...).

    Tokens the model's config lacks (pad, BOS, the ablation's neutral token) come from `tokenizer`.
    """
    config = InterpSettings(**settings)
    prompt_ids, target_ids, prompt = encode_pair(
        tokenizer_encoder(tokenizer), prompt, target, prefix_token(tokenizer)
    )
    offsets = token_offsets(tokenizer, prompt, prompt_ids, add_special_tokens=True)
    needles = [instruction] if isinstance(instruction, str) else list(instruction or [])
    spans = locate_fields(prompt, {"instruction": needles}, where="the prompt") if needles else {}
    labels = label_tokens(offsets, prompt, spans)
    result = build_pass(model, tokenizer, config, ffn_cache_dir=ffn_cache_dir).run(
        prompt_ids, target_ids, labels, check_fp32=check_fp32
    )
    return Attribution(
        raw=result.raw.astype(np.float32),
        prompt_tokens=tokenizer.convert_ids_to_tokens(prompt_ids),
        target_tokens=tokenizer.convert_ids_to_tokens(target_ids),
        token_parts=labels,
        target_logprobs=result.target_logprobs,
        metrics=result.metrics,
        attention=result.attention,
        notes=result.notes,
        fp32_check=result.extras.get("fp32_check"),
        ffn=result.ffn,
        details=result.details,
    )
