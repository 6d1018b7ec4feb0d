"""Word vocabularies for global explanations, and word relatedness in the model's own embedding space.

A "word" is a whole-word token of the model's tokenizer (or a user word list mapped to single tokens); heads
and FFN components are explained over such words. Relatedness replaces the paper's GloVe (no download here).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


_BOUNDARY_MARKERS = ("\u0120", "\u2581", " ")  # byte-level BPE "Ġ", SentencePiece "▁", plain space


@dataclass
class WordVocab:
    """Whole words of a tokenizer, each a single token. ``token_ids[i]`` is the token of ``words[i]``."""

    token_ids: list[int]
    words: list[str]

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.words):
            raise ValueError(f"{len(self.token_ids)} token ids but {len(self.words)} words")


def whole_word_vocab(
    tokenizer: PreTrainedTokenizerBase, min_len: int = 2, max_words: int | None = None
) -> WordVocab:
    """Tokens that are a whole alphabetic word starting at a word boundary, deduplicated by lower case.

    A token qualifies when its raw piece starts with a boundary marker (``Ġ`` of byte-level BPE, ``▁`` of
    SentencePiece, or a space) and the rest is alphabetic with at least `min_len` letters; word-internal
    pieces ("ing") are left out. Of words equal up to case the lowest token id (usually the most frequent) is
    kept.
    """
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    seen: set[str] = set()
    ids: list[int] = []
    words: list[str] = []
    vocab = tokenizer.get_vocab()
    for piece, tid in sorted(vocab.items(), key=lambda kv: kv[1]):
        if tid in special or not piece.startswith(_BOUNDARY_MARKERS):
            continue
        word = piece[1:]
        if len(word) < min_len or not word.isascii() or not word.isalpha():
            continue
        key = word.lower()
        if key in seen:
            continue
        seen.add(key)
        ids.append(int(tid))
        words.append(word)
        if max_words is not None and len(ids) >= max_words:
            break
    if not ids:
        raise ValueError(
            f"the tokenizer {type(tokenizer).__name__} has no whole-word tokens (pieces starting with 'Ġ', "
            "'▁' "
            "or a space followed by letters); pass an explicit word list (vocab=[...]) instead"
        )
    return WordVocab(ids, words)


def resolve_word_vocab(
    tokenizer: PreTrainedTokenizerBase,
    vocab: str | Path | Sequence[str] | WordVocab | None,
    max_words: int | None = None,
) -> tuple[WordVocab, str]:
    """The vocabulary an explanation draws its words from, and a description of it for the output header.

    `vocab`: None (the tokenizer's whole words, at most `max_words`), a `WordVocab`, a text file with one word
    per line, or a list of words.
    """
    if vocab is None:
        return whole_word_vocab(tokenizer, max_words=max_words), "tokenizer whole words"
    if isinstance(vocab, WordVocab):
        return vocab, "given WordVocab"
    if isinstance(vocab, (str, Path)):
        path = Path(vocab)
        if not path.is_file():
            raise FileNotFoundError(f"word list {path} not found; give a text file with one word per line")
        return word_list_vocab(
            tokenizer, path.read_text(encoding="utf-8").splitlines()
        ), f"word list {path.name}"
    return word_list_vocab(tokenizer, list(vocab)), "given word list"


def word_list_vocab(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> WordVocab:
    """Map a user's words to single tokens (the word-initial form, " word", is tried first).

    Words that are not one token are dropped with a warning that lists them.
    """
    ids: list[int] = []
    kept: list[str] = []
    dropped: list[str] = []
    for word in dict.fromkeys(w.strip() for w in words if w.strip()):
        for form in (" " + word, word):
            enc = tokenizer.encode(form, add_special_tokens=False)
            if len(enc) == 1:
                ids.append(int(enc[0]))
                kept.append(word)
                break
        else:
            dropped.append(word)
    if dropped:
        logger.warning(
            "%d words are not single tokens and are left out: %s", len(dropped), ", ".join(dropped)
        )
    if not ids:
        raise ValueError(f"none of the {len(dropped)} words given is a single token of the tokenizer")
    return WordVocab(ids, kept)


class WordRelatedness:
    """Whether two vocabulary words are related in the model's own input-embedding space.

    Similarity is the cosine of the word embeddings after centring them on the vocabulary mean (raw LM
    embeddings share a large common direction that makes every cosine high). Two modes:

    - ``"neighbors"`` (default): a and b are related when b is among the `neighbors` nearest words of a, or a
      among those of b (scale-free, so one setting suits every model); the word itself does not count, and
      the cosine must also be positive (more similar than the average word), so that a word without any close
      word gets no neighbours by default.
    - ``"cosine"``: related when the cosine is at least `min_similarity`.
    """

    def __init__(
        self,
        word_embeddings: Tensor,
        mode: str = "neighbors",
        neighbors: int = 50,
        min_similarity: float = 0.3,
        chunk: int = 4096,
    ) -> None:
        if mode not in ("neighbors", "cosine"):
            raise ValueError(f"relatedness mode must be 'neighbors' or 'cosine', got {mode!r}")
        e = word_embeddings.float()
        e = e - e.mean(0, keepdim=True)
        self.unit = e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self.mode = mode
        self.neighbors = neighbors
        self.min_similarity = min_similarity
        v = self.unit.shape[0]
        if mode == "cosine":
            self.threshold = torch.full((v,), float(min_similarity), device=self.unit.device)
            self.floor = float(min_similarity)
        else:
            r = max(1, min(neighbors, v - 1))
            th = torch.empty(v, device=self.unit.device)
            for start in range(0, v, chunk):
                sims = self.unit[start : start + chunk] @ self.unit.T
                idx = torch.arange(start, min(start + chunk, v), device=sims.device)
                sims[torch.arange(len(idx), device=sims.device), idx] = -math.inf  # not one's own neighbour
                th[start : start + chunk] = sims.topk(r, dim=-1).values[:, -1]
            self.threshold = th
            self.floor = 1e-6
        # The k-th neighbour's cosine (the threshold, from a matrix product) and the same cosine recomputed
        # elsewhere (an elementwise sum or an einsum) differ by rounding in the float32 reduction order, so
        # the k-th neighbour itself could fail `>=` against its own threshold. A float32 dot product of two
        # unit vectors of dimension d is off by about sqrt(d) ulps of 1 (random-walk rounding); 4x that is the
        # tolerance of every comparison against a threshold. Cosines closer than that to the cut are ties.
        self.tolerance = 4.0 * math.sqrt(self.unit.shape[-1]) * torch.finfo(torch.float32).eps

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """Centred cosine similarity of word indices `a` and `b` (broadcast, same trailing shape)."""
        return (self.unit[a] * self.unit[b]).sum(-1)

    def related(self, a: Tensor, b: Tensor) -> Tensor:
        """Boolean: words `a` and `b` (index tensors of equal shape) are related."""
        sims = self.similarity(a, b) + self.tolerance
        return (sims >= torch.minimum(self.threshold[a], self.threshold[b])) & (sims >= self.floor)

    def related_lists(self, a: Tensor, b: Tensor, chunk: int = 4) -> Tensor:
        """Boolean ``... x i x j``: word ``a[..., i]`` is related to word ``b[..., j]``.

        Computed in chunks along the first dimension to bound memory (``a``, ``b``: ``n x ... x k``).
        """
        out = []
        for start in range(0, a.shape[0], chunk):
            ai, bi = a[start : start + chunk], b[start : start + chunk]
            sims = torch.einsum("...id,...jd->...ij", self.unit[ai], self.unit[bi]) + self.tolerance
            th = torch.minimum(self.threshold[ai][..., :, None], self.threshold[bi][..., None, :])
            out.append((sims >= th) & (sims >= self.floor))
        return torch.cat(out)

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode, "neighbors": self.neighbors, "min_similarity": self.min_similarity}
