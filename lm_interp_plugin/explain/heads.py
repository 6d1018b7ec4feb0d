"""``lm-interp explain-heads``: every attention head of a model as word pairs, saved as JSONL.

This module joins the architecture adapter (weights by family) with the pure method in
`lm_interp_plugin.methods.head_pairs` (projection of whole words through the norm-folded W_Q / W_K). The JSONL
file has one header line (model fingerprint, parameters, shape) and one line per (layer, head); two files,
base and tuned, feed the instruction-verb analysis (`compare_heads`; the report's heads section draws it as
the paper's Table 3).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ..arch import get_adapter
from ..methods.head_pairs import (
    HeadsExplanation,
    HeadWordPairs,
    fold_norm,
    layer_word_pairs,
    normalise_like_norm,
)
from ..methods.verbs import VerbAnalysis, verb_analysis
from ..methods.vocab import WordRelatedness, WordVocab, resolve_word_vocab
from .io import read_header_jsonl
from .loading import load_model_for_explain, model_fingerprint, parse_layers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

HEADS_SCHEMA_VERSION = 1
DEFAULT_TOP_K = 10

__all__ = [
    "HeadWordPairs",
    "HeadsExplanation",
    "compare_heads",
    "explain_heads",
    "read_heads_jsonl",
    "write_heads_jsonl",
]


@torch.no_grad()
def explain_heads(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    top_k: int | None = 10,
    vocab: str | Path | Sequence[str] | WordVocab | None = None,
    layers: str | Sequence[int] | None = None,
    relatedness: str = "neighbors",
    neighbors: int = 50,
    min_similarity: float = 0.3,
    max_pairs: int = 100,
    max_words: int | None = None,
    keep_all_dimensions: bool = False,
    progress: bool = True,
) -> HeadsExplanation:
    """Explain every attention head (of the selected layers) as word pairs.

    Args:
        model, tokenizer: a Hugging Face causal LM of a supported family and its tokenizer.
        top_k: words per head dimension on the query and on the key side (None: 10).
        vocab: None (the tokenizer's whole-word tokens), a word list, or a text file with one word per line.
        layers: None (all), a list, or a string such as ``"0-3,7"``.
        relatedness: ``"neighbors"`` (the key word among the query word's nearest `neighbors` in the model's
            input embeddings, or vice versa) or ``"cosine"`` (centred cosine >= `min_similarity`).
        max_pairs: aggregated pairs kept per head (the per-dimension detail keeps all kept pairs).
        max_words: cap on the whole-word vocabulary (lowest token ids first).
        keep_all_dimensions: record the top words of dimensions without any kept pair too.
        progress: show a tqdm bar over layers.
    """
    top_k = DEFAULT_TOP_K if top_k is None else int(top_k)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    adapter = get_adapter(model)
    chosen = parse_layers(layers, adapter.num_layers)
    word_vocab, vocab_source = resolve_word_vocab(tokenizer, vocab, max_words)
    emb = adapter.input_embedding_matrix()
    device = emb.device
    ids = torch.tensor(word_vocab.token_ids, device=device)
    if int(ids.max()) >= emb.shape[0]:
        raise ValueError(f"token id {int(ids.max())} is outside the model's {emb.shape[0]} embeddings")
    word_emb = emb[ids].float() * adapter.embedding_scale()
    related = WordRelatedness(word_emb, mode=relatedness, neighbors=neighbors, min_similarity=min_similarity)
    words_normed = normalise_like_norm(word_emb, adapter.spec.norm_type)
    logger.info(
        "explain-heads: %d layers x %d heads, %d words (%s), top_k=%d",
        len(chosen),
        adapter.num_heads,
        len(word_vocab.words),
        vocab_source,
        top_k,
    )
    heads: list[HeadWordPairs] = []
    for layer in tqdm(chosen, desc="explain-heads", disable=not progress):
        wq, wk = adapter.qk_weights(layer)
        norm_w = adapter.input_norm_weight(layer)
        q_scale, k_scale = adapter.qk_head_norm_weights(layer)
        heads.extend(
            layer_word_pairs(
                fold_norm(wq.to(device), norm_w, q_scale),
                fold_norm(wk.to(device), norm_w, k_scale),
                words_normed,
                word_vocab.words,
                related,
                layer=layer,
                top_k=top_k,
                max_pairs=max_pairs,
                keep_all_dimensions=keep_all_dimensions,
            )
        )
    params = {
        "top_k": top_k,
        "relatedness": related.params(),
        "max_pairs": max_pairs,
        "vocab_source": vocab_source,
        "vocab_size": len(word_vocab.words),
        "layers": chosen,
        "keep_all_dimensions": keep_all_dimensions,
        "norm_type": adapter.spec.norm_type,
    }
    return HeadsExplanation(
        fingerprint=model_fingerprint(model, tokenizer),
        params=params,
        num_layers=adapter.num_layers,
        num_heads=adapter.num_heads,
        heads=heads,
    )


def write_heads_jsonl(path: str | Path, expl: HeadsExplanation) -> Path:
    """Write a header line and one line per (layer, head)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "type": "header",
        "schema_version": HEADS_SCHEMA_VERSION,
        "fingerprint": expl.fingerprint,
        "params": expl.params,
        "num_layers": expl.num_layers,
        "num_heads": expl.num_heads,
    }
    with path.open("w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        for head in expl.heads:
            f.write(json.dumps({"type": "head", **head.to_dict()}) + "\n")
    return path


def read_heads_jsonl(path: str | Path) -> HeadsExplanation:
    """Read a file written by `write_heads_jsonl`."""
    header, heads = read_header_jsonl(
        path, "explain-heads", "head", HeadWordPairs.from_dict, HEADS_SCHEMA_VERSION
    )
    return HeadsExplanation(
        fingerprint=header["fingerprint"],
        params=header["params"],
        num_layers=int(header["num_layers"]),
        num_heads=int(header["num_heads"]),
        heads=heads,
    )


def compare_heads(
    base: HeadsExplanation,
    tuned: HeadsExplanation,
    instruction_verbs: Sequence[str] | None = None,
    general_verbs: Sequence[str] | None = None,
) -> VerbAnalysis:
    """The instruction-verb analysis of a base and a tuned model (see `methods.verbs.verb_analysis`)."""
    if base.params.get("vocab_source") != tuned.params.get("vocab_source") or base.params.get(
        "top_k"
    ) != tuned.params.get("top_k"):
        logger.warning(
            "base and tuned heads were explained with different settings (%s vs %s); counts may not compare",
            {k: base.params.get(k) for k in ("top_k", "vocab_source")},
            {k: tuned.params.get(k) for k in ("top_k", "vocab_source")},
        )
    return verb_analysis(base, tuned, instruction_verbs, general_verbs)


def explain_heads_to_file(
    model_path: str | Path,
    out: str | Path,
    *,
    dtype: str = "auto",
    device: str | None = None,
    revision: str | None = None,
    **options: Any,
) -> HeadsExplanation:
    """Load `model_path`, explain its heads (`explain_heads` options) and write them to `out` (JSONL)."""
    model, tokenizer = load_model_for_explain(model_path, dtype, device, revision)
    explanation = explain_heads(model, tokenizer, **{k: v for k, v in options.items() if v is not None})
    write_heads_jsonl(out, explanation)
    return explanation
