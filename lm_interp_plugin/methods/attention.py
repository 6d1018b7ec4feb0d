"""Attention-side methods: instruction attention per example, head word pairs and the instruction-verb
analysis.

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

import json
import logging
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

VERBS_FILE = Path(__file__).resolve().parent.parent / "data" / "verbs.json"
LAYER_GROUPS = ("first", "middle", "last")
_RELATIVE_FLOOR = 1e-5  # projections below this fraction of a dimension's largest |projection| count as zero


# ------------------------------------------------------------------------------------------------------------
# Instruction attention (per example)
# ------------------------------------------------------------------------------------------------------------
def target_query_positions(prompt_len: int, target_len: int) -> list[int]:
    """Query positions that predict the target tokens: ``prompt_len - 1 .. prompt_len + target_len - 2``.

    Target token n (1-based) sits at position ``prompt_len + n - 1`` and is predicted from the position before
    it, so "attention from the answer" is the attention of the positions that produce the answer: the last
    prompt token (which predicts the first target token) through the second-to-last target token.
    """
    if prompt_len < 1 or target_len < 1:
        raise ValueError(f"need prompt_len >= 1 and target_len >= 1, got {prompt_len} and {target_len}")
    return list(range(prompt_len - 1, prompt_len + target_len - 1))


@dataclass
class InstructionAttention:
    """Attention mass on instruction tokens, per layer and head, for one example.

    Attributes:
        mass: ``layers x heads``: mean over target query positions of the attention probability summed over
            instruction key positions.
        lift: ``layers x heads``: ``mass / uniform_share``; 1.0 is what uniform attention over the prompt
        gives.
        uniform_share: ``|instruction| / prompt_len``.
        mean_mass: mean of `mass` over layers and heads.
        mean_lift: mean of `lift` over layers and heads.
        layer_mass: per-layer mean of `mass` over heads.
        top_heads: the heads with the largest lift, as ``(layer, head, mass, lift)``, best first.
        query_positions: the query positions averaged over.
    """

    mass: Tensor
    lift: Tensor
    uniform_share: float
    mean_mass: float
    mean_lift: float
    layer_mass: list[float]
    top_heads: list[tuple[int, int, float, float]]
    query_positions: list[int]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for records)."""
        return {
            "instruction_attention": self.mass.tolist(),
            "instruction_attention_lift": self.lift.tolist(),
            "uniform_share": self.uniform_share,
            "mean_mass": self.mean_mass,
            "mean_lift": self.mean_lift,
            "layer_mass": self.layer_mass,
            "top_heads": [list(t) for t in self.top_heads],
            "query_positions": self.query_positions,
        }


def instruction_attention(
    attn: Tensor,
    instruction_mask: Sequence[int] | Sequence[bool] | Tensor,
    target_positions: Sequence[int] | Tensor,
    top_n: int = 5,
) -> InstructionAttention:
    """Mean attention mass that the answer-producing positions put on the instruction tokens.

    Args:
        attn: attention probabilities of one sequence, ``layers x heads x seq x seq`` (query, key).
        instruction_mask: one entry per *prompt* token (length prompt_len), true on instruction tokens.
        target_positions: the query positions to average over, usually `target_query_positions`.
        top_n: how many heads to list in ``top_heads``.

    Returns:
        An `InstructionAttention` with per-head mass and lift over the uniform share ``|instruction| /
        prompt_len``.
    """
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be layers x heads x seq x seq, got shape {tuple(attn.shape)}")
    mask = torch.as_tensor(instruction_mask, device=attn.device).bool().flatten()
    prompt_len, seq = int(mask.numel()), int(attn.shape[-1])
    if prompt_len > seq:
        raise ValueError(
            f"instruction_mask has {prompt_len} entries but the sequence has only {seq} positions"
        )
    n_instr = int(mask.sum())
    if n_instr == 0:
        raise ValueError(
            "instruction_mask marks no instruction token; check the instruction span of the prompt"
        )
    pos = torch.as_tensor(target_positions, device=attn.device, dtype=torch.long).flatten()
    if pos.numel() == 0 or int(pos.min()) < 0 or int(pos.max()) >= seq:
        raise ValueError(f"target_positions must be non-empty and within [0, {seq}), got {pos.tolist()}")
    key_mask = torch.zeros(seq, dtype=attn.dtype, device=attn.device)
    key_mask[:prompt_len] = mask.to(attn.dtype)
    rows = attn.float()[:, :, pos, :]  # layers x heads x targets x seq
    mass = (rows * key_mask.float()).sum(-1).mean(-1).cpu()  # layers x heads
    share = n_instr / prompt_len
    lift = mass / share
    flat = lift.flatten()
    order = torch.argsort(flat, descending=True)[: min(top_n, flat.numel())]
    n_heads = mass.shape[1]
    top = [
        (int(i) // n_heads, int(i) % n_heads, float(mass.flatten()[i]), float(flat[i]))
        for i in order.tolist()
    ]
    return InstructionAttention(
        mass=mass,
        lift=lift,
        uniform_share=share,
        mean_mass=float(mass.mean()),
        mean_lift=float(lift.mean()),
        layer_mass=mass.mean(1).tolist(),
        top_heads=top,
        query_positions=pos.cpu().tolist(),
    )


# ------------------------------------------------------------------------------------------------------------
# Word vocabularies
# ------------------------------------------------------------------------------------------------------------
_BOUNDARY_MARKERS = ("\u0120", "\u2581", " ")  # byte-level BPE "Ġ", SentencePiece "▁", plain space


@dataclass
class WordVocab:
    """Whole words of a tokenizer, each a single token. ``token_ids[i]`` is the token of ``words[i]``."""

    token_ids: list[int]
    words: list[str]

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.words):
            raise ValueError(f"{len(self.token_ids)} token ids but {len(self.words)} words")


def whole_word_vocab(tokenizer, min_len: int = 2, max_words: int | None = None) -> WordVocab:
    """Tokens that are a whole alphabetic word starting at a word boundary, deduplicated by lower case.

    A token qualifies when its raw piece starts with a boundary marker (``Ġ`` of byte-level BPE, ``▁`` of
    SentencePiece, or a space) and the rest is alphabetic with at least `min_len` letters; word-internal
    pieces
    ("ing") are left out. Of words equal up to case the lowest token id (usually the most frequent) is kept.
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


def resolve_word_vocab(tokenizer, vocab, max_words: int | None = None) -> tuple[WordVocab, str]:
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


def word_list_vocab(tokenizer, words: Sequence[str]) -> WordVocab:
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


# ------------------------------------------------------------------------------------------------------------
# Head word pairs (global, per model)
# ------------------------------------------------------------------------------------------------------------
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

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """Centred cosine similarity of word indices `a` and `b` (broadcast, same trailing shape)."""
        return (self.unit[a] * self.unit[b]).sum(-1)

    def related(self, a: Tensor, b: Tensor) -> Tensor:
        """Boolean: words `a` and `b` (index tensors of equal shape) are related."""
        sims = self.similarity(a, b)
        return (sims >= torch.minimum(self.threshold[a], self.threshold[b])) & (sims >= self.floor)

    def related_lists(self, a: Tensor, b: Tensor, chunk: int = 4) -> Tensor:
        """Boolean ``... x i x j``: word ``a[..., i]`` is related to word ``b[..., j]``.

        Computed in chunks along the first dimension to bound memory (``a``, ``b``: ``n x ... x k``).
        """
        out = []
        for start in range(0, a.shape[0], chunk):
            ai, bi = a[start : start + chunk], b[start : start + chunk]
            sims = torch.einsum("...id,...jd->...ij", self.unit[ai], self.unit[bi])
            th = torch.minimum(self.threshold[ai][..., :, None], self.threshold[bi][..., None, :])
            out.append((sims >= th) & (sims >= self.floor))
        return torch.cat(out)

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode, "neighbors": self.neighbors, "min_similarity": self.min_similarity}


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
        head_scale: ``head_dim`` weight of a per-head norm applied after the projection, or None. Its RMS
            division (positive, per word) is not folded: it rescales each word on all dimensions alike.
    """
    w = w.float()
    if norm_weight is not None:
        w = w * norm_weight.float().to(w.device)[None, None, :]
    if head_scale is not None:
        w = w * head_scale.float().to(w.device)[None, :, None]
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


# ------------------------------------------------------------------------------------------------------------
# Instruction-verb analysis (paper Table 3)
# ------------------------------------------------------------------------------------------------------------
def load_verbs(path: str | Path | None = None) -> tuple[list[str], list[str]]:
    """Instruction and general verbs from ``data/verbs.json`` (keys ``instruction_verbs``,
    ``general_verbs``)."""
    path = Path(path) if path is not None else VERBS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"verb list {path} not found; pass instruction_verbs=[...] and general_verbs=[...] explicitly"
        )
    data = json.loads(path.read_text())
    try:
        return [str(v) for v in data["instruction_verbs"]], [str(v) for v in data["general_verbs"]]
    except KeyError as exc:
        raise ValueError(
            f"{path} lacks the key {exc}; it needs 'instruction_verbs' and 'general_verbs'"
        ) from None


def layer_groups(num_layers: int) -> dict[str, list[int]]:
    """Split layers into first / middle / last thirds (earlier groups get the extra layer)."""
    parts = np.array_split(np.arange(num_layers), 3)
    return {name: [int(i) for i in part] for name, part in zip(LAYER_GROUPS, parts)}


@dataclass
class VerbAnalysis:
    """Share of heads where a verb's count rises from base to tuned, per layer group.

    Attributes:
        groups: layer indices of each group (first / middle / last third).
        verb_shares: ``{group: {verb: share}}`` for every verb of both lists.
        instruction_mean / general_mean: ``{group: mean share}`` over the verbs of each list.
        t_stat / p_value: ``{group: Welch t-test}`` of instruction-verb shares against general-verb shares
            (two-sided; t > 0 means instruction verbs rise in more heads).
        instruction_verbs / general_verbs: the lists used.
        heads_per_group: number of heads in each group.
    """

    groups: dict[str, list[int]]
    verb_shares: dict[str, dict[str, float]]
    instruction_mean: dict[str, float]
    general_mean: dict[str, float]
    t_stat: dict[str, float]
    p_value: dict[str, float]
    instruction_verbs: list[str]
    general_verbs: list[str]
    heads_per_group: dict[str, int]


def _count_table(expl: HeadsExplanation, verbs: Sequence[str]) -> dict[tuple[int, int], list[int]]:
    out = {}
    for h in expl.heads:
        counts = h.word_counts()
        out[(h.layer, h.head)] = [counts.get(v.lower(), 0) for v in verbs]
    return out


def verb_analysis(
    base: HeadsExplanation,
    tuned: HeadsExplanation,
    instruction_verbs: Sequence[str] | None = None,
    general_verbs: Sequence[str] | None = None,
) -> VerbAnalysis:
    """Per layer group, the share of heads where each verb's count rises from base to tuned; Welch t-test.

    Args:
        base, tuned: word-pair explanations of the same architecture (same layers x heads).
        instruction_verbs, general_verbs: verb lists; when both are None, ``data/verbs.json`` is read.
    """
    from scipy.stats import ttest_ind

    if instruction_verbs is None and general_verbs is None:
        instruction_verbs, general_verbs = load_verbs()
    if not instruction_verbs or not general_verbs:
        raise ValueError("need non-empty instruction_verbs and general_verbs lists")
    if (base.num_layers, base.num_heads) != (tuned.num_layers, tuned.num_heads):
        raise ValueError(
            f"base has {base.num_layers} x {base.num_heads} heads but tuned has {tuned.num_layers} x "
            f"{tuned.num_heads}; compare two models of the same architecture"
        )
    verbs = list(dict.fromkeys([*instruction_verbs, *general_verbs]))
    cb, ct = _count_table(base, verbs), _count_table(tuned, verbs)
    if set(cb) != set(ct):
        raise ValueError(
            "base and tuned explanations cover different heads; explain every head of both models"
        )
    groups = layer_groups(base.num_layers)
    shares: dict[str, dict[str, float]] = {}
    imean, gmean, tstat, pval, nheads = {}, {}, {}, {}, {}
    for name, layers in groups.items():
        keys = [key for key in cb if key[0] in layers]
        nheads[name] = len(keys)
        if not keys:
            shares[name] = {v: math.nan for v in verbs}
        else:
            rises = np.array([[t > b for b, t in zip(cb[key], ct[key])] for key in keys], dtype=float)
            shares[name] = dict(zip(verbs, rises.mean(0).tolist()))
        a = np.array([shares[name][v] for v in instruction_verbs])
        g = np.array([shares[name][v] for v in general_verbs])
        imean[name], gmean[name] = float(a.mean()), float(g.mean())
        # Welch's t is undefined with fewer than two verbs per list or when neither list varies
        if keys and len(a) > 1 and len(g) > 1 and (np.ptp(a) > 0 or np.ptp(g) > 0):
            with warnings.catch_warnings():
                # a list whose verbs all share one value is common here (and Welch's t stays defined);
                # scipy flags it as "precision loss", which is not a problem for exact shares
                warnings.filterwarnings("ignore", message="Precision loss", category=RuntimeWarning)
                res = ttest_ind(a, g, equal_var=False)
            tstat[name], pval[name] = float(res.statistic), float(res.pvalue)
        else:
            tstat[name], pval[name] = math.nan, math.nan
    return VerbAnalysis(
        groups=groups,
        verb_shares=shares,
        instruction_mean=imean,
        general_mean=gmean,
        t_stat=tstat,
        p_value=pval,
        instruction_verbs=list(instruction_verbs),
        general_verbs=list(general_verbs),
        heads_per_group=nheads,
    )


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


def format_table3(analysis: VerbAnalysis) -> str:
    """Markdown table in the form of the paper's Table 3: share of heads where verb counts rise, per group."""
    cols = []
    for name in LAYER_GROUPS:
        layers = analysis.groups[name]
        span = f"{layers[0]}-{layers[-1]}" if layers else "none"
        cols.append(f"{name} layers ({span})")
    lines = [
        "| verbs | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
        f"| instruction verbs (n={len(analysis.instruction_verbs)}) | "
        + " | ".join(_pct(analysis.instruction_mean[g]) for g in LAYER_GROUPS)
        + " |",
        f"| general verbs (n={len(analysis.general_verbs)}) | "
        + " | ".join(_pct(analysis.general_mean[g]) for g in LAYER_GROUPS)
        + " |",
        "| Welch t-test (t, p) | "
        + " | ".join(
            "n/a"
            if math.isnan(analysis.t_stat[g])
            else f"t = {analysis.t_stat[g]:.2f}, p = {analysis.p_value[g]:.3g}"
            for g in LAYER_GROUPS
        )
        + " |",
    ]
    return "\n".join(lines) + "\n"
