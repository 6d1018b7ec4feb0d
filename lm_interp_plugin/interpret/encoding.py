"""How a (prompt, target) pair becomes token ids: once, exactly as lm-eval's HFLM scores a loglikelihood
request.

Both the lm-eval model (`harness.model`, with HFLM's own encoder) and the Python API (`interpret.api`, with
the tokenizer's defaults) go through `encode_pair`, so that the same text gives the same ids, hence the same
matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# (text, add_special_tokens) -> ids; None means "the tokenizer's (or HFLM's) default"
Encoder = Callable[[str, "bool | None"], list[int]]


def tokenizer_encoder(tokenizer: PreTrainedTokenizerBase) -> Encoder:
    """An `Encoder` from a Hugging Face tokenizer, adding its special tokens (BOS) by default as HFLM does."""

    def encode(text: str, add_special_tokens: bool | None) -> list[int]:
        kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return list(tokenizer(text, **kwargs)["input_ids"])

    return encode


def prefix_token(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The token HFLM conditions on when the prompt is empty: BOS, else EOS (None if the tokenizer has
    neither)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos if bos is not None else getattr(tokenizer, "eos_token_id", None)


def encode_pair(
    encode: Encoder, prompt: str, target: str, prefix_token_id: int | None
) -> tuple[list[int], list[int], str]:
    """``(prompt_ids, target_ids, prompt)`` as HFLM scores them.

    Trailing prompt spaces move to the target (a word keeps its leading-space token); prompt + target is
    encoded whole and split at the prompt's length. An empty prompt is conditioned on `prefix_token_id` alone.
    """
    n_spaces = len(prompt) - len(prompt.rstrip())
    if n_spaces:
        target, prompt = prompt[-n_spaces:] + target, prompt[:-n_spaces]
    if not prompt:
        if prefix_token_id is None:
            raise ValueError(
                "the prompt is empty and the tokenizer has no BOS/EOS token to condition on: "
                "there is nothing to attribute to"
            )
        return [prefix_token_id], list(encode(target, False)), prompt
    whole = list(encode(prompt + target, None))
    context = list(encode(prompt, None))
    return context, whole[len(context) :], prompt
