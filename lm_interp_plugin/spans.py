"""Prompt segmentation: character spans of named parts (instruction, content, ...) to per-token labels.

A task says which characters of its rendered prompt belong to which part; this module maps those spans onto
the tokens the model actually saw, through the tokenizer's offset mapping (fast tokenizers) or, where a
tokenizer has none, through incremental decoding. It works with and without a BOS token, with several spans
per part, and on chat-templated prompts (the spans are found in the final string).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

Span = tuple[int, int]

#: Part labels, in priority order when a token overlaps several parts.
PART_PRIORITY = ("instruction", "fewshot", "content", "choices", "label", "cue", "template", "system", "chat")
SPECIAL = "special"
INSTRUCTION = "instruction"
DEFAULT_PART = "template"


class InstructionNotFoundError(ValueError):
    """The instruction of an example could not be located in its prompt."""


def find_last(text: str, needle: str, before: int | None = None) -> Span | None:
    """The span of the last occurrence of `needle` in `text` (ending at or before `before`), or None."""
    if not needle:
        return None
    end_limit = len(text) if before is None else before
    start = text.rfind(needle, 0, end_limit)
    return None if start < 0 else (start, start + len(needle))


def locate_fields(
    text: str, fields: Mapping[str, Sequence[str]], where: str = "the prompt"
) -> dict[str, list[Span]]:
    """Find each part's strings in `text` (the last occurrence: few-shot examples come before the question).

    Args:
        text: the rendered prompt.
        fields: part name -> the strings that belong to it (e.g. {"instruction": [doc["instruction"]]}).
        where: how to name the prompt in an error (task and doc id).

    Raises:
        InstructionNotFoundError: a non-empty instruction string does not occur in the prompt.
    """
    spans: dict[str, list[Span]] = {}
    for part, needles in fields.items():
        for needle in needles:
            needle = (needle or "").strip()
            if not needle:
                continue
            span = find_last(text, needle)
            if span is None:
                if part == "instruction":
                    raise InstructionNotFoundError(
                        f"the instruction of {where} does not occur verbatim in its prompt "
                        f"(looked for {needle[:80]!r}); make the task's doc_to_text include the instruction "
                        "field unchanged, or declare where the instruction is via metadata.interp"
                    )
                logger.debug("part %r not found in %s: %r", part, where, needle[:80])
                continue
            spans.setdefault(part, []).append(span)
    return spans


def token_offsets(
    tokenizer: PreTrainedTokenizerBase, text: str, ids: Sequence[int], add_special_tokens: bool
) -> list[Span]:
    """Character span of each token of `ids` (the encoding of `text`) inside `text`; (0, 0) for specials.

    Uses the fast tokenizer's offset mapping when re-encoding `text` gives exactly `ids`; otherwise falls back
    to decoding growing prefixes, which works for any tokenizer whose decode round-trips the text.
    """
    ids = list(ids)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        if list(enc["input_ids"]) == ids:
            special = set(tokenizer.all_special_ids)
            return [
                (0, 0) if i in special and s == e else (int(s), int(e))
                for i, (s, e) in zip(ids, enc["offset_mapping"])
            ]
    return _offsets_by_decoding(tokenizer, text, ids)


def _offsets_by_decoding(tokenizer: PreTrainedTokenizerBase, text: str, ids: list[int]) -> list[Span]:
    special = set(getattr(tokenizer, "all_special_ids", []))
    offsets: list[Span] = []
    consumed = 0
    content_ids: list[int] = []
    for tid in ids:
        if tid in special:
            offsets.append((0, 0))
            continue
        content_ids.append(tid)
        decoded = tokenizer.decode(content_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        end = min(len(decoded), len(text))
        offsets.append((consumed, max(consumed, end)))
        consumed = max(consumed, end)
    return offsets


def label_tokens(
    offsets: Sequence[Span], text: str, spans: Mapping[str, Sequence[Span]], default: str = DEFAULT_PART
) -> list[str]:
    """One part label per token: the highest-priority part whose span overlaps the token's visible characters.

    Leading whitespace of a token (byte-level BPE puts the space before a word into the word's token) does not
    count as overlap, so the token before an instruction is not pulled into it. A token that is only
    whitespace belongs to the part whose span holds it (the blank line inside an instruction is instruction).
    """
    order = {p: i for i, p in enumerate(PART_PRIORITY)}
    ranked = sorted(spans.items(), key=lambda kv: order.get(kv[0], len(order)))
    labels = []
    for start, end in offsets:
        if start == end:
            labels.append(SPECIAL if (start, end) == (0, 0) else default)
            continue
        visible = start
        while visible < end and text[visible].isspace():
            visible += 1
        label = default
        for part, part_spans in ranked:
            if visible == end:  # whitespace only: inside a span, not merely touching it
                hit = any(s <= start and end <= e for s, e in part_spans)
            else:
                hit = any(s < end and visible < e for s, e in part_spans)
            if hit:
                label = part
                break
        labels.append(label)
    return labels


def truncated_offsets(
    tokenizer: PreTrainedTokenizerBase, text: str, ids: Sequence[int], keep: int, add_special_tokens: bool
) -> list[Span]:
    """Offsets of the last `keep` tokens of `ids` (the encoding of `text`), as after a left truncation.

    Why: a prompt cut to the model's max_length keeps the part labels of the tokens it keeps; the offsets come
    from the full encoding, where the tokenizer's offset mapping applies, then the cut is made.
    """
    offsets = token_offsets(tokenizer, text, ids, add_special_tokens)
    return offsets[len(offsets) - keep :] if keep > 0 else []


def trim_span(text: str, s: int, e: int) -> Span:
    """The span ``[s, e)`` of `text` without its leading and trailing whitespace."""
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def instruction_mask(labels: Sequence[str]) -> np.ndarray:
    """Boolean ``prompt_len`` array, True on the tokens labelled ``instruction`` (the one place saying so)."""
    return np.array([label == INSTRUCTION for label in labels], dtype=bool)
