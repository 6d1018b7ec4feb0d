"""Attention heads as word pairs (global, per model): norm-folded W_Q / W_K projections of whole words.

Pure torch/numpy: tensors in, dataclasses out; module names live in `lm_interp_plugin.arch`.

Shapes: ``layers x heads x seq x seq`` for attention probabilities of one sequence (prompt + target),
``heads x head_dim x d_model`` for per-head query/key weights, ``vocab x d_model`` for word embeddings.

Head word pairs (Wu et al. 2024, section on self-attention heads). For a head h and a head dimension e, the
query of a word w is ``q_e(w) = <W'_q[h, e], n(E[w])>`` and its key ``k_e(w) = <W'_k[h, e], n(E[w])>``, where
``W' = W * norm_weight`` (the input norm folded in) and ``n`` is the norm's parameter-free normalisation
(RMS or LayerNorm), i.e. the word as the layer's attention would see it at the start of the residual stream.
The product ``q_e(a) * k_e(b)`` is dimension e's contribution to the attention logit from query word a to key
word b. Per dimension and per *sign* s in {+1, -1} we take the top-K words of ``s * q_e`` and of ``s * k_e``;
a pair (a, b) from the two lists is a candidate when ``s * q_e(a) > 0`` and ``s * k_e(b) > 0``, so that its
product is positive (s = +1: both strongly positive; s = -1: both strongly negative). Candidates are kept
when the two words are related in the model's own input-embedding space (the paper used GloVe, which cannot
be downloaded here; see `WordRelatedness`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .vocab import WordRelatedness

logger = logging.getLogger(__name__)

_RELATIVE_FLOOR = 1e-5  # projections below this fraction of a dimension's largest |projection| count as zero


@dataclass
class DimensionWords:
    """One head dimension and sign: its top query and key words and the kept (related) pairs.

    Attributes:
        dim: the head dimension.
        sign: +1 when the words project most positively on both sides, -1 when most negatively.
        query_words / key_words: the top-K words (those with ``sign * projection > 0``), best first.
        pairs: kept pairs as indices into ``query_words`` and ``key_words``.
    """

    dim: int
    sign: int
    query_words: list[str]
    key_words: list[str]
    pairs: list[tuple[int, int]]

    def word_pairs(self) -> list[tuple[str, str]]:
        return [(self.query_words[i], self.key_words[j]) for i, j in self.pairs]


@dataclass
class HeadWordPairs:
    """The word pairs of one attention head.

    Attributes:
        layer, head: the head.
        pairs: ``(query_word, key_word, count, score)`` aggregated over dimensions and signs: count = number
        of
            (dimension, sign) lists the pair was kept in, score = sum of its products ``q_e(a) * k_e(b)``;
            sorted by count then score, truncated to the explanation's ``max_pairs``.
        dims: per-dimension detail (dimensions with at least one kept pair unless all were requested).
    """

    layer: int
    head: int
    pairs: list[tuple[str, str, int, float]]
    dims: list[DimensionWords] = field(default_factory=list)

    def word_counts(self) -> Counter:
        """Occurrences of each (lower-cased) word among all the head's kept pairs, query and key side."""
        counts: Counter = Counter()
        for d in self.dims:
            for q, k in d.word_pairs():
                counts[q.lower()] += 1
                counts[k.lower()] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "head": self.head,
            "pairs": [list(p) for p in self.pairs],
            "dims": [
                {
                    "dim": d.dim,
                    "sign": d.sign,
                    "query": d.query_words,
                    "key": d.key_words,
                    "pairs": [list(p) for p in d.pairs],
                }
                for d in self.dims
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadWordPairs:
        return cls(
            layer=int(data["layer"]),
            head=int(data["head"]),
            pairs=[(str(q), str(k), int(c), float(s)) for q, k, c, s in data["pairs"]],
            dims=[
                DimensionWords(
                    int(d["dim"]),
                    int(d["sign"]),
                    list(d["query"]),
                    list(d["key"]),
                    [(int(i), int(j)) for i, j in d["pairs"]],
                )
                for d in data["dims"]
            ],
        )


@dataclass
class HeadsExplanation:
    """Word pairs of every attention head of a model, with the settings and the model fingerprint."""

    fingerprint: dict[str, Any]
    params: dict[str, Any]
    num_layers: int
    num_heads: int
    heads: list[HeadWordPairs]

    def head(self, layer: int, head: int) -> HeadWordPairs:
        for h in self.heads:
            if h.layer == layer and h.head == head:
                return h
        raise KeyError(
            f"no head ({layer}, {head}) in this explanation ({self.num_layers} x {self.num_heads})"
        )


def normalise_like_norm(x: Tensor, norm_type: str | None, eps: float = 1e-6) -> Tensor:
    """The parameter-free part of the model's input norm: RMS scaling, LayerNorm standardisation, or none."""
    x = x.float()
    if norm_type == "rms":
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if norm_type == "layer":
        x = x - x.mean(-1, keepdim=True)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if norm_type is None:
        return x
    raise ValueError(f"norm_type must be 'rms', 'layer' or None, got {norm_type!r}")


def fold_norm(w: Tensor, norm_weight: Tensor | None, head_scale: Tensor | None = None) -> Tensor:
    """``W * norm_weight`` along d_model (and per-head-dimension scale, e.g. Qwen3's q/k norm weight).

    Args:
        w: ``heads x head_dim x d_model``.
        norm_weight: ``d_model`` effective multiplicative norm weight, or None.
        head_scale: ``head_dim`` weight of a per-head norm applied after the projection (``heads x head_dim``
            for a norm over the whole projection), or None. Its RMS
            division (positive, per word) is not folded: it rescales each word on all dimensions alike.
    """
    w = w.float()
    if norm_weight is not None:
        w = w * norm_weight.float().to(w.device)[None, None, :]
    if head_scale is not None:  # [head_dim] per head, or [heads, head_dim] over the whole projection
        scale = head_scale.float().to(w.device)
        w = w * (scale[None, :, None] if scale.dim() == 1 else scale[:, :, None])
    return w


def project_words(w: Tensor, words_normed: Tensor) -> Tensor:
    """Per-head, per-dimension projections of words: ``heads x head_dim x vocab``."""
    return torch.einsum("hed,vd->hev", w, words_normed)


def layer_word_pairs(
    wq: Tensor,
    wk: Tensor,
    words_normed: Tensor,
    words: Sequence[str],
    relatedness: WordRelatedness,
    layer: int,
    top_k: int = 10,
    max_pairs: int = 100,
    keep_all_dimensions: bool = False,
) -> list[HeadWordPairs]:
    """Word pairs of every head of one layer (all heads at once).

    Args:
        wq, wk: norm-folded query and key weights, ``heads x head_dim x d_model`` (key heads expanded).
        words_normed: the vocabulary words as the layer sees them, ``vocab x d_model``
        (`normalise_like_norm`).
        words: the word strings, ``vocab``.
        relatedness: a `WordRelatedness` over the same vocabulary (same order).
        layer: the layer index (recorded in the output).
        top_k: words per dimension and side.
        max_pairs: aggregated pairs kept per head (the per-dimension detail keeps all).
        keep_all_dimensions: also record dimensions with no kept pair.
    """
    if wq.shape != wk.shape:
        raise ValueError(f"wq {tuple(wq.shape)} and wk {tuple(wk.shape)} differ; expand GQA key heads first")
    if words_normed.shape[0] != len(words):
        raise ValueError(f"{words_normed.shape[0]} word embeddings but {len(words)} words")
    n_heads, head_dim, _ = wq.shape
    k = max(1, min(top_k, len(words)))
    q_proj = project_words(wq, words_normed)  # heads x head_dim x vocab
    k_proj = project_words(wk, words_normed)
    # "positive" means above a relative round-off floor, so that all-zero dimensions give no words
    q_floor = _RELATIVE_FLOOR * q_proj.abs().amax(-1, keepdim=True)
    k_floor = _RELATIVE_FLOOR * k_proj.abs().amax(-1, keepdim=True)
    per_sign = []
    for sign in (1, -1):
        qv, qi = (sign * q_proj).topk(k, dim=-1)  # heads x head_dim x k
        kv, ki = (sign * k_proj).topk(k, dim=-1)
        qv = torch.where(qv > q_floor, qv, torch.zeros_like(qv))
        kv = torch.where(kv > k_floor, kv, torch.zeros_like(kv))
        keep = (qv > 0)[..., :, None] & (kv > 0)[..., None, :] & relatedness.related_lists(qi, ki)
        prod = qv[..., :, None] * kv[..., None, :]  # = q_e(a) * k_e(b) > 0 where kept
        per_sign.append((sign, qv.cpu(), qi.cpu(), kv.cpu(), ki.cpu(), keep.cpu(), prod.cpu()))

    out: list[HeadWordPairs] = []
    for h in range(n_heads):
        agg: dict[tuple[str, str], list[float]] = {}
        dims: list[DimensionWords] = []
        for sign, qv, qi, kv, ki, keep, prod in per_sign:
            for e in range(head_dim):
                kept = keep[h, e].nonzero().tolist()
                if not kept and not keep_all_dimensions:
                    continue
                nq = int((qv[h, e] > 0).sum())
                nk = int((kv[h, e] > 0).sum())
                qw = [words[i] for i in qi[h, e, :nq].tolist()]
                kw = [words[i] for i in ki[h, e, :nk].tolist()]
                pairs = [(int(i), int(j)) for i, j in kept]
                dims.append(DimensionWords(e, sign, qw, kw, pairs))
                for i, j in pairs:
                    slot = agg.setdefault((qw[i], kw[j]), [0, 0.0])
                    slot[0] += 1
                    slot[1] += float(prod[h, e, i, j])
        ranked = sorted(agg.items(), key=lambda kv_: (-kv_[1][0], -kv_[1][1], kv_[0]))[:max_pairs]
        dims.sort(key=lambda d: (d.dim, -d.sign))
        out.append(
            HeadWordPairs(layer, h, [(q, kw_, int(c), round(s, 6)) for (q, kw_), (c, s) in ranked], dims)
        )
    return out
