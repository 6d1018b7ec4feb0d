"""Tiny tokenizers and models built locally, for tests, examples and the demo.

Nothing here downloads anything: the tokenizer is trained with the `tokenizers` library on text we pass in,
and models are built from configs with random (seeded) weights. A model and tokenizer saved with
`save_tiny` load back through the ordinary `from_pretrained` path, exactly as a hub checkpoint would.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import (
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        PreTrainedTokenizerFast,
    )

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}

#: Small configs, one per family that `arch.py` supports. Sizes are chosen so that every family builds in
#: well under a second on a CPU; `hidden`/`layers`/`heads` are overridable in `tiny_config`.
TINY_FAMILIES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gpt2",
    "gpt_neox",
    "phi3",
    "olmo",
)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, add_bos: bool = True
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a `PreTrainedTokenizerFast`.

    Byte-level BPE covers any input text (no unknown characters) and gives exact character offsets, which
    `spans.py` needs. With `add_bos` the tokenizer prepends `<s>` the way Llama-family tokenizers do.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = list(SPECIAL_TOKENS.values())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    if add_bos:
        bos_id = tok.token_to_id(SPECIAL_TOKENS["bos_token"])
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.model_max_length = 2048
    return fast


def tiny_config(
    family: str,
    vocab_size: int,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int | None = 2,
    intermediate: int | None = None,
    max_positions: int = 512,
) -> PretrainedConfig:
    """A small `PretrainedConfig` of the given family (see `TINY_FAMILIES`).

    `kv_heads` < `heads` gives grouped-query attention where the family supports it.
    """
    from transformers import AutoConfig

    intermediate = intermediate or 2 * hidden
    kv = kv_heads or heads
    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if family == "gpt2":
        kw = dict(
            n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_positions, n_inner=intermediate
        )
    elif family == "gpt_neox":
        kw = dict(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=max_positions,
        )
    else:
        kw = dict(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            intermediate_size=intermediate,
            max_position_embeddings=max_positions,
        )
        if family in ("gemma", "gemma2", "qwen3"):
            kw["head_dim"] = hidden // heads
        if family == "phi3":
            kw["pad_token_id"] = 2
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")
    return AutoConfig.for_model(family, **{**common, **kw})


def build_tiny_model(
    family: str, tokenizer: PreTrainedTokenizerBase, seed: int = 0, **config_kwargs: Any
) -> PreTrainedModel:
    """A randomly initialised causal LM of `family` sized for `tokenizer` (float32, eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, vocab_size=len(tokenizer), **config_kwargs)
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    return model


def save_tiny(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Save model and tokenizer so that `AutoModelForCausalLM.from_pretrained(path)` loads them."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def sample_corpus() -> list[str]:
    """A few hundred lines of English-like text to train test tokenizers on (instructions included)."""
    verbs = ["Rewrite", "Summarize", "Translate", "Classify", "List", "Explain", "Write", "Answer", "Solve"]
    objects = ["the sentence", "the paragraph", "the poem", "the code", "the question", "the story"]
    extras = ["in French", "for a child", "concisely", "step by step", "as a list", "in one word"]
    words = "the a cat dog sat on mat river city number five seven apple green blue fast slow".split()
    lines = []
    for i, v in enumerate(verbs):
        for j, o in enumerate(objects):
            for k, e in enumerate(extras):
                filler = " ".join(words[(i + j + k + t) % len(words)] for t in range(6))
                lines.append(f"{v} {o} {e}.\n\nInput: {filler}.\n\nOutput: {filler[::-1]}")
    return lines


def task_corpus() -> list[str]:
    """`sample_corpus` plus the shipped `interp_instruct` items rendered as prompt + answer, so a tokenizer
    trained on it covers the task text that tests and benchmarks feed the model."""
    import json
    from importlib.resources import files

    texts = sample_corpus()
    source = files("lm_interp_plugin.tasks").joinpath("interp_instruct.jsonl")
    for line in source.read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc = json.loads(line)
            texts.append(f"{doc['instruction']}\n\nInput: {doc['input']}\n\nOutput: {doc['reference']}")
    return texts
