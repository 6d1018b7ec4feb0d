"""Concept labels of FFN principal components from their top words, each one calibrated against a null.

The paper asked ChatGPT which concept a component's top words express. Two offline labellers do it here,
registered by name (`build_labeller`, with a did-you-mean error for a typo):

- ``"lexicon"`` (`LexiconLabeller`, the default): compares the top words with a word list per concept
  (``lm_interp_plugin/data/concepts.json`` or a dict) in the explained model's own embedding space.
- ``"llm"`` (`methods.concept_llm.LLMLabeller`, spec ``llm:PATH`` or ``llm:PATH::FILE.gguf``): asks a local
  instruction-tuned causal LM to name the concept, scoring each concept name and ``"none"`` by
  log-likelihood under one fixed prompt (no sampling).

A raw similarity is not evidence: a coherent top-word list is closer to every coherent word list than random
words are, so an uncalibrated labeller names a concept for most components, even on a random-weight model.
Both labellers therefore test each (component, concept) score against a null made for that component (see each
class), combine a component's concepts with Bonferroni, and control the false-discovery rate over all
components of the model (Benjamini-Hochberg, `benjamini_hochberg`). A component whose best concept does not
survive is labelled ``"none"``.

Every label has a task concept (writing, coding, math, translation, ... or ``"none"``) and a linguistic level
(morphology, syntax, semantics or ``"none"``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: A component's label when no concept beats its null (after false-discovery control).
NONE = "none"
#: The per-example share pool: activation on components that carry no validated concept.
OTHER = "other"
#: The two label kinds a lexicon file holds, and the attribute of `ConceptLabel` each one fills.
LEXICON_GROUPS = {"task_concepts": "concept", "linguistic_levels": "level"}
#: The optional key of a lexicon file that maps each task concept to the ``interp_instruct`` categories whose
#: items should use it most (the validity check of `explain.ffn_validity`).
VALIDATION_KEY = "validation_categories"

Lexicons = dict[str, dict[str, list[str]]]


@dataclass
class ConceptLabel:
    """The label of one principal component.

    Attributes:
        concept: the task concept, or ``"none"`` when no concept beats the component's null.
        level: the linguistic level, or ``"none"``.
        scores: each concept's and level's raw score (higher = closer); empty for labellers without scores.
        pole: which pole decided the concept (``"positive"``, ``"negative"``) or ``""`` when unknown.
        p_values: each concept's and level's p-value against the component's null.
        q_concept: the component's false-discovery q-value for its best concept (Benjamini-Hochberg over the
            model's components), ``None`` when not computed.
        q_level: the same for its best linguistic level.
    """

    concept: str = NONE
    level: str = NONE
    scores: dict[str, float] = field(default_factory=dict)
    pole: str = ""
    p_values: dict[str, float] = field(default_factory=dict)
    q_concept: float | None = None
    q_level: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptLabel:
        def _q(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(
            concept=str(data.get("concept", NONE)),
            level=str(data.get("level", NONE)),
            scores={str(k): float(v) for k, v in dict(data.get("scores", {})).items()},
            pole=str(data.get("pole", "")),
            p_values={str(k): float(v) for k, v in dict(data.get("p_values", {})).items()},
            q_concept=_q("q_concept"),
            q_level=_q("q_level"),
        )


Poles = Sequence[tuple[Sequence[str], Sequence[str]]]


# -- registry
# ----------------------------------------------------------------------------------------------------
LABELLERS: dict[str, type[ConceptLabeller]] = {}


class ConceptLabeller(ABC):
    """Names the concept a component's top words express. Subclasses set ``name`` to register themselves.

    Attributes:
        concepts: the task concepts this labeller can return (besides ``"none"``).
        levels: the linguistic levels it can return (besides ``"none"``).
    """

    name: ClassVar[str] = ""
    concepts: list[str]
    levels: list[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            LABELLERS[cls.name] = cls

    @classmethod
    @abstractmethod
    def create(cls, *, embeddings: torch.Tensor | None, tokenizer: Any, **options) -> ConceptLabeller:
        """Build the labeller for a model whose output embeddings and tokenizer are given."""

    @abstractmethod
    def label_all(self, poles: Poles, directions: torch.Tensor | None = None) -> list[ConceptLabel]:
        """The labels of all components of a model at once, from each component's (positive, negative) words.

        All at once because the false-discovery control runs over every component of the model.
        `directions` (``components x d_model``, optional) are the components themselves: the null is then
        made of random mixtures of them (directions the model writes, with the same top-word statistics),
        else of isotropic random directions.
        """

    def label(self, top_words_pos: Sequence[str], top_words_neg: Sequence[str]) -> ConceptLabel:
        """The label of one component on its own (false-discovery control over this one component)."""
        return self.label_all([(top_words_pos, top_words_neg)])[0]

    def config(self) -> dict[str, Any]:
        """The settings that change the labels (recorded in outputs and cache keys)."""
        return {"name": self.name}


def get_labeller_class(name: str) -> type[ConceptLabeller]:
    """The registered labeller class called `name`; raises `ValueError` with a did-you-mean hint."""
    if name == "llm" and name not in LABELLERS:
        from . import concept_llm  # noqa: F401  (registers the LLM labeller; it imports transformers)
    try:
        return LABELLERS[name]
    except KeyError:
        known = sorted({*LABELLERS, "llm"})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown concept labeller {name!r}; registered labellers: {', '.join(known)} "
            f"(the llm one as llm:PATH or llm:PATH::FILE.gguf).{hint}"
        ) from None


def parse_labeller_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"lexicon"`` -> ``("lexicon", {})``; ``"llm:PATH"`` -> ``("llm", {"model_path": PATH})``;
    ``"llm:PATH::FILE.gguf"`` -> ``("llm", {"model_path": PATH, "gguf_file": FILE.gguf})``."""
    name, sep, rest = spec.partition(":")
    if not sep:
        return name, {}
    if name != "llm" or not rest:
        raise ValueError(
            f"labeller {spec!r} is not 'lexicon', 'llm:PATH' or 'llm:PATH::FILE.gguf'; give the judge "
            "model's folder (or hub id) after 'llm:'"
        )
    path, sep, gguf = rest.partition("::")
    return name, {"model_path": path, **({"gguf_file": gguf} if sep else {})}


def build_labeller(
    name: str = "lexicon", *, embeddings: torch.Tensor | None = None, tokenizer: Any = None, **options
) -> ConceptLabeller:
    """Make the labeller `name` (a registered name or an ``llm:PATH[::FILE]`` spec) for a model (see each
    class's ``create`` for `options`)."""
    name, spec_options = parse_labeller_spec(name)
    return get_labeller_class(name).create(
        embeddings=embeddings, tokenizer=tokenizer, **{**spec_options, **options}
    )


# -- calibration: a null per component, Bonferroni over its concepts, BH over the model's components
# ------------------------------------------------------------------------------------------------------------
def empirical_p(stat: np.ndarray, null: np.ndarray) -> np.ndarray:
    """``(1 + #{null >= stat}) / (K + 1)`` along the last axis of `null` (``... x K``): an exact,
    never-zero permutation p-value for each entry of `stat` (shape ``...``)."""
    null = np.asarray(null, dtype=np.float64)
    k = null.shape[-1]
    exceed = (null >= np.asarray(stat, dtype=np.float64)[..., None] - 1e-12).sum(axis=-1)
    return (1.0 + exceed) / (k + 1.0)


def benjamini_hochberg(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p-values) of independent or positively dependent tests: reject
    every test with ``q <= alpha`` to keep the expected share of false discoveries at most ``alpha``."""
    p = np.asarray(p, dtype=np.float64).ravel()
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    q = np.empty(m)
    q[order] = q_sorted
    return q


def fdr_labels(p: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per component (rows of the ``components x names`` p-values `p`): the index of its best name, or -1
    when it does not survive; and its q-value. A component's p-value is its smallest p times the number of
    names (Bonferroni: it was allowed to pick the best), capped at 1; BH runs over all components."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"p must be components x names, got shape {p.shape}")
    if p.shape[0] == 0 or p.shape[1] == 0:
        return np.full(p.shape[0], -1), np.ones(p.shape[0])
    best = p.argmin(axis=1)
    p_comp = np.minimum(1.0, p.min(axis=1) * p.shape[1])
    q = benjamini_hochberg(p_comp)
    return np.where(q <= alpha, best, -1), q


def null_directions(directions: torch.Tensor | None, n: int, d: int, seed: int) -> torch.Tensor:
    """`n` random directions (``n x d``, seeded): Gaussian mixtures of the rows of `directions` (the model's
    components) when given, else isotropic. Mixtures of the components write into the same subspace with the
    same top-word statistics (frequent tokens, sub-word pieces) as the components, so a component beats them
    only by what is specific to it."""
    gen = torch.Generator().manual_seed(seed)
    if directions is None:
        return torch.randn(n, d, generator=gen)
    basis = directions.detach().float().cpu()
    if basis.ndim != 2 or basis.shape[1] != d:
        raise ValueError(f"directions must be components x {d}, got shape {tuple(basis.shape)}")
    return torch.randn(n, basis.shape[0], generator=gen) @ basis


def _validate_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha} must be in (0, 1): the false-discovery rate of the labels")
    return alpha


# -- lexicons
# ----------------------------------------------------------------------------------------------------
def load_lexicons(path: str | Path | None = None) -> Lexicons:
    """Read and validate a concept lexicon file (default: the packaged ``data/concepts.json``).

    Schema: ``{"task_concepts": {concept: [words]}, "linguistic_levels": {level: [words]}}``.
    """
    if path is None:
        source = resources.files("lm_interp_plugin").joinpath("data", "concepts.json")
        where = "lm_interp_plugin/data/concepts.json"
        if not source.is_file():
            raise FileNotFoundError(f"{where} is missing from the installed package; reinstall lm-interp")
        text = source.read_text(encoding="utf-8")
    else:
        where = str(path)
        text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"concept lexicon {where} is not valid JSON ({err})") from err
    return validate_lexicons(data, where)


def load_validation_categories(path: str | Path | None = None) -> dict[str, list[str]]:
    """Each task concept's ``interp_instruct`` categories (``validation_categories`` of the lexicon file):
    the items on which a valid concept's per-example share must be higher than on the others."""
    if path is None:
        text = resources.files("lm_interp_plugin").joinpath("data", "concepts.json").read_text("utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text).get(VALIDATION_KEY, {})
    if not isinstance(data, Mapping) or not all(
        isinstance(v, list) and all(isinstance(c, str) for c in v) for v in data.values()
    ):
        raise ValueError(f"{path or 'concepts.json'}: {VALIDATION_KEY} must map each concept to categories")
    return {str(k): list(v) for k, v in data.items()}


def validate_lexicons(data: Any, where: str = "lexicons") -> Lexicons:
    """Check the lexicon schema; return a clean copy (words stripped, empty ones dropped, order kept)."""
    if not isinstance(data, Mapping) or not any(g in data for g in LEXICON_GROUPS):
        raise ValueError(
            f"{where} must be a JSON object with keys {list(LEXICON_GROUPS)}, each mapping a name to a word "
            "list"
        )
    clean: Lexicons = {}
    for group in LEXICON_GROUPS:
        entries = data.get(group, {})
        if not isinstance(entries, Mapping):
            # a malformed file is a bad value, like the other schema errors
            raise ValueError(
                f"{where}: {group!r} must map each name to a list of words, got {type(entries).__name__}"
            )
        clean[group] = {}
        for name, words in entries.items():
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise ValueError(f"{where}: {group}.{name} must be a list of strings")
            if name in (NONE, OTHER):
                raise ValueError(f"{where}: {group} may not define {name!r}; it is a reserved label")
            clean[group][str(name)] = [w.strip() for w in words if w.strip()]
    return clean


# -- lexicon labeller
# --------------------------------------------------------------------------------------------
def _encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    if callable(getattr(tokenizer, "encode", None)):
        return lambda text: list(tokenizer.encode(text, add_special_tokens=False))
    if callable(tokenizer):
        return tokenizer
    raise TypeError(
        f"tokenizer must have .encode(text, add_special_tokens=False) or be a callable str -> ids, "
        f"got {type(tokenizer).__name__}"
    )


_FREQ_BINS = 8
_MIN_POOL = 20  # fewer whole words than this: random directions' top words say nothing, no label is tested


class LexiconLabeller(ConceptLabeller):
    """Scores a component's top words against per-concept word lists in the model's own embedding space,
    and keeps a concept only when it beats the component's null.

    A word's vector: the word is encoded as it stands and with a leading space; the encoding with fewer tokens
    wins (ties: the bare word), and a multi-token word gets the mean of its tokens' normalised embeddings.
    With ``center`` the vocabulary's mean embedding is subtracted first (embedding spaces are anisotropic).

    Score of a concept C for one pole's words W, net of W's coherence: the mean cosine over all pairs (W x C)
    minus the mean cosine of W with random word sets matched to C in size and frequency (the same share of
    words from each token-id bin of the tokenizer's whole words; byte-level BPE numbers tokens in merge order,
    a frequency proxy), plus ``exact_weight`` times the share of W that are in C (case-insensitive). A tight
    list of frequent words is close to every list of frequent words; subtracting its score against random
    lists of the same size and frequency leaves what is specific to C. A component's score is the better of
    its two poles.

    The null: ``n_null`` random directions of the model's residual space, each read exactly as a component is
    (its ``top_n`` words at both poles among the tokenizer's whole words, by the row-normalised output
    embeddings) and scored by the same rule. A component gets concept C only if it scores higher than random
    directions do: p-value by `empirical_p`, then `fdr_labels` at ``alpha`` over all components given to
    `label_all` (Bonferroni over concepts, Benjamini-Hochberg over components). On a random-weight model the
    components are random directions and the labels are false discoveries, kept at ``alpha``. Deterministic
    given ``seed``.
    """

    name = "lexicon"

    def __init__(
        self,
        embeddings: torch.Tensor,
        tokenizer: Any,
        lexicons: Mapping[str, Any] | None = None,
        exact_weight: float = 0.0,
        center: bool = True,
        n_null: int = 2000,
        alpha: float = 0.05,
        seed: int = 0,
        pool: Sequence[str] | None = None,
    ):
        if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
            raise ValueError("embeddings must be a vocab x d_model tensor (the model's output embeddings)")
        if int(n_null) < 99:
            raise ValueError(f"n_null={n_null} is too small for p-values near 0.01; use at least 99")
        self._encode = _encoder(tokenizer)
        self.lexicons = load_lexicons() if lexicons is None else validate_lexicons(lexicons)
        self.exact_weight = float(exact_weight)
        self.center = bool(center)
        self.n_null, self.alpha, self.seed = int(n_null), _validate_alpha(alpha), int(seed)
        # rows are read on demand: a real vocabulary x d_model matrix is not copied
        self._E = embeddings.detach()
        self._d = int(self._E.shape[1])
        self._mean = torch.mean(self._E, dim=0, dtype=torch.float32) if center else None
        self._cache: dict[str, tuple[torch.Tensor | None, int]] = {}
        self.concepts = list(self.lexicons.get("task_concepts", {}))
        self.levels = list(self.lexicons.get("linguistic_levels", {}))
        self._pool_words, pool_ids = self._make_pool(tokenizer, pool)
        self._pool_ids = torch.tensor(pool_ids, dtype=torch.long)
        self._pool_unit = self._unit_rows(self._pool_ids)
        self._nulls: dict[tuple[str, int, int | None], torch.Tensor] = {}
        # per group: each entry's lexicon direction net of its size- and frequency-matched random baseline
        self._directions: dict[str, torch.Tensor] = {}
        self._word_sets: dict[str, list[set[str]]] = {}
        for group, entries in self.lexicons.items():
            rows = []
            for name, words in entries.items():
                known = [(v, r) for v, r in (self._word(w) for w in words) if v is not None]
                if not known:
                    logger.warning(
                        "lexicon %s.%s: no word maps to the vocabulary; exact matches only", group, name
                    )
                    rows.append(torch.zeros(self._d))
                    continue
                centroid = torch.stack([v for v, _ in known]).mean(dim=0)
                rows.append(centroid - self._baseline([r for _, r in known]))
            self._directions[group] = torch.stack(rows) if rows else torch.zeros(0, self._d)
            self._word_sets[group] = [{w.casefold() for w in words} for words in entries.values()]

    @classmethod
    def create(cls, *, embeddings: torch.Tensor | None, tokenizer: Any, **options) -> LexiconLabeller:
        """Options: ``lexicons`` (dict or path to a JSON file), ``exact_weight``, ``center``, ``n_null``,
        ``alpha``, ``seed``, ``pool`` (the null's words; default: the tokenizer's whole words)."""
        if embeddings is None or tokenizer is None:
            raise ValueError("the lexicon labeller needs the model's output embeddings and its tokenizer")
        lexicons = options.pop("lexicons", None)
        if isinstance(lexicons, (str, Path)):
            lexicons = load_lexicons(lexicons)
        return cls(embeddings, tokenizer, lexicons=lexicons, **options)

    def config(self) -> dict[str, Any]:
        digest = json.dumps(self.lexicons, sort_keys=True)
        return {
            "name": self.name,
            "exact_weight": self.exact_weight,
            "center": self.center,
            "n_null": self.n_null,
            "alpha": self.alpha,
            "seed": self.seed,
            "null": "random mixtures of the components; net of size/frequency-matched sets; Bonferroni, BH",
            "lexicons_sha256": hashlib.sha256(digest.encode()).hexdigest()[:16],
        }

    # -- word vectors
    def _unit_rows(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self._E[ids.to(self._E.device)].float()
        if self._mean is not None:
            rows = rows - self._mean.to(rows.device)
        return (rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)).cpu()

    def _make_pool(self, tokenizer: Any, pool: Sequence[str] | None) -> tuple[list[str], list[int]]:
        if pool is None:
            if not callable(getattr(tokenizer, "get_vocab", None)):
                raise ValueError(
                    "the lexicon labeller draws its null from the tokenizer's whole words; this tokenizer "
                    "has no get_vocab(), so pass pool=[words] (single-token words of the model)"
                )
            from .vocab import whole_word_vocab

            vocab = whole_word_vocab(tokenizer)
            pairs = list(zip(vocab.words, vocab.token_ids))
        else:
            pairs = [(w, self._word_token(w)) for w in pool]
            pairs = [(w, t) for w, t in pairs if t is not None]
        if len(pairs) < _MIN_POOL:
            logger.warning(
                "the lexicon labeller's null has %d single-token words to read random directions in (fewer "
                "than %d): no label can be tested, every component is labelled %r",
                len(pairs),
                _MIN_POOL,
                NONE,
            )
        return [w for w, _ in pairs], [int(t) for _, t in pairs]

    def _word_token(self, word: str) -> int | None:
        for variant in (word, " " + word):
            ids = [i for i in self._encode(variant) if 0 <= i < self._E.shape[0]]
            if len(ids) == 1:
                return ids[0]
        return None

    def _word(self, word: str) -> tuple[torch.Tensor | None, int]:
        """The unit vector of `word` (None if unknown) and its frequency rank (the id of its rarest token)."""
        if word in self._cache:
            return self._cache[word]
        best: list[int] | None = None
        for variant in (word, " " + word):
            ids = [i for i in self._encode(variant) if 0 <= i < self._E.shape[0]]
            if ids and (best is None or len(ids) < len(best)):
                best = ids
        vec, rank = None, -1
        if best:
            v = self._unit_rows(torch.tensor(best)).mean(dim=0)
            norm = v.norm()
            vec = v / norm if norm > 0 else None
            rank = max(best)
        self._cache[word] = (vec, rank)
        return vec, rank

    def word_vector(self, word: str) -> torch.Tensor | None:
        """The unit vector of `word` (see the class docstring), or None if it encodes to no known token."""
        return self._word(word)[0]

    def _baseline(self, ranks: Sequence[int]) -> torch.Tensor:
        """The expected centroid of random pool words matched to `ranks` in frequency (token-id bins)."""
        ids = self._pool_ids.double()
        edges = torch.quantile(ids, torch.linspace(0, 1, _FREQ_BINS + 1, dtype=torch.float64))[1:-1]
        pool_bin = torch.bucketize(ids, edges, right=True)
        want = torch.bincount(
            torch.bucketize(torch.tensor(ranks).double(), edges, right=True), minlength=_FREQ_BINS
        )
        out = torch.zeros(self._d)
        if len(self._pool_ids) < _MIN_POOL:
            return out
        for b in range(_FREQ_BINS):
            if int(want[b]):
                out += float(want[b]) / len(ranks) * self._pool_unit[pool_bin == b].mean(dim=0)
        return out

    # -- scores
    def _pole_scores(self, group: str, mean_vecs: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        """``poles x names`` scores from each pole's mean word vector and its exact-match shares."""
        return mean_vecs @ self._directions[group].T + self.exact_weight * exact

    def scores(self, group: str, words: Sequence[str]) -> torch.Tensor:
        """Score of every entry of `group` (``"task_concepts"`` or ``"linguistic_levels"``) for `words`."""
        n = self._directions[group].shape[0]
        vecs = self._vectors(words) if words else None
        if vecs is None or n == 0:
            mean = torch.zeros(1, self._d)
        else:
            mean = vecs.mean(dim=0, keepdim=True)
        folded = [w.casefold() for w in words]
        exact = torch.tensor(
            [[sum(w in s for w in folded) / max(1, len(folded)) for s in self._word_sets[group]]]
        )
        return self._pole_scores(group, mean, exact)[0]

    def _vectors(self, words: Sequence[str]) -> torch.Tensor | None:
        vecs = [v for v in (self.word_vector(w) for w in words) if v is not None]
        return torch.stack(vecs) if vecs else None

    def _null(self, group: str, top_n: int, directions: torch.Tensor | None) -> torch.Tensor:
        """``n_null x names`` scores of random directions read with `top_n` words per pole."""
        key = (group, top_n, None if directions is None else id(directions))
        if key not in self._nulls:
            dirs = null_directions(directions, self.n_null, self._d, self.seed)
            out_rows = self._E[self._pool_ids.to(self._E.device)].float().cpu()
            out_rows = out_rows / out_rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
            proj = dirs @ out_rows.T  # n_null x pool
            n = min(top_n, proj.shape[1])
            member = torch.tensor(
                [[w.casefold() in s for w in self._pool_words] for s in self._word_sets[group]],
                dtype=torch.float32,
            )  # names x pool
            best = None
            for idx in (torch.topk(proj, n, dim=1).indices, torch.topk(-proj, n, dim=1).indices):
                mean = self._pool_unit[idx].mean(dim=1)
                exact = member[:, idx].mean(dim=2).T  # n_null x names
                scores = self._pole_scores(group, mean, exact)
                best = scores if best is None else torch.maximum(best, scores)
            self._nulls[key] = best
        return self._nulls[key]

    def label_all(self, poles: Poles, directions: torch.Tensor | None = None) -> list[ConceptLabel]:
        self._nulls.clear()
        labels = [ConceptLabel() for _ in poles]
        if len(self._pool_words) < _MIN_POOL:
            return labels  # nothing to test against (warned at construction)
        for group, attr in LEXICON_GROUPS.items():
            names = list(self.lexicons.get(group, {}))
            if not names or not poles:
                continue
            stats, p = [], []
            for pos, neg in poles:
                rp, rn = self.scores(group, pos), self.scores(group, neg)
                stat = torch.maximum(rp, rn)
                stats.append((stat, rp >= rn))
                null = self._null(group, max(len(pos), len(neg), 1), directions)
                p.append(empirical_p(stat.numpy(), null.T.numpy()))
            chosen, q = fdr_labels(np.stack(p), self.alpha)
            for lab, (stat, pos_wins), p_row, j, q_j in zip(labels, stats, p, chosen, q):
                for name, value, pv in zip(names, stat.tolist(), p_row.tolist()):
                    lab.scores[name] = round(float(value), 6)
                    lab.p_values[name] = round(float(pv), 6)
                setattr(lab, "q_" + attr, round(float(q_j), 6))
                if j >= 0:
                    setattr(lab, attr, names[j])
                    if attr == "concept":
                        lab.pole = "positive" if bool(pos_wins[j]) else "negative"
        return labels
