"""Offline concept labelling of FFN principal components from their top words.

The paper asked ChatGPT which concept a component's top words express; nothing can be called over the
network here, so labelling is pluggable: a `ConceptLabeller` subclass with a ``name`` registers itself, and
`build_labeller` makes one by name (with a did-you-mean error for a typo).

- ``"lexicon"`` (`LexiconLabeller`, the default): compares the top words with word lists per concept
  (``lm_interp_plugin/data/concepts.json`` or a dict) in the explained model's own embedding space.
- ``"local_lm"`` (`LocalLMLabeller`): asks a local instruction-tuned model, loaded with transformers from a
  path the user gives, to pick a category; its free-text answer is parsed, falling back to ``"other"``.

Every label has a task concept (writing, coding, math, translation, ... or ``"other"``) and a linguistic
level (morphology, syntax, semantics or ``"other"``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import torch

logger = logging.getLogger(__name__)

OTHER = "other"
#: The two label kinds a lexicon file holds, and the attribute of `ConceptLabel` each one fills.
LEXICON_GROUPS = {"task_concepts": "concept", "linguistic_levels": "level"}

Lexicons = dict[str, dict[str, list[str]]]


@dataclass
class ConceptLabel:
    """The label of one principal component.

    Attributes:
        concept: the task concept, or ``"other"`` when none scores above the labeller's threshold.
        level: the linguistic level, or ``"other"``.
        scores: each concept's and level's score (higher = closer); empty for labellers without scores.
        pole: which pole decided the concept (``"positive"``, ``"negative"``) or ``""`` when unknown.
    """

    concept: str = OTHER
    level: str = OTHER
    scores: dict[str, float] = field(default_factory=dict)
    pole: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptLabel:
        return cls(
            concept=str(data.get("concept", OTHER)),
            level=str(data.get("level", OTHER)),
            scores={str(k): float(v) for k, v in dict(data.get("scores", {})).items()},
            pole=str(data.get("pole", "")),
        )


# -- registry
# ----------------------------------------------------------------------------------------------------
LABELLERS: dict[str, type[ConceptLabeller]] = {}


class ConceptLabeller(ABC):
    """Names the concept a component's top words express. Subclasses set ``name`` to register themselves.

    Attributes:
        concepts: the task concepts this labeller can return (besides ``"other"``).
        levels: the linguistic levels it can return (besides ``"other"``).
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
    def label(self, top_words_pos: Sequence[str], top_words_neg: Sequence[str]) -> ConceptLabel:
        """The label of one component from the words of its positive and negative poles."""

    def config(self) -> dict[str, Any]:
        """The settings that change the labels (recorded in outputs and cache keys)."""
        return {"name": self.name}


def get_labeller_class(name: str) -> type[ConceptLabeller]:
    """The registered labeller class called `name`; raises `ValueError` with a did-you-mean hint."""
    try:
        return LABELLERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(LABELLERS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown concept labeller {name!r}; registered labellers: {', '.join(sorted(LABELLERS))}.{hint}"
        ) from None


def build_labeller(
    name: str = "lexicon", *, embeddings: torch.Tensor | None = None, tokenizer: Any = None, **options
) -> ConceptLabeller:
    """Make the labeller registered as `name` for a model (see each class's ``create`` for `options`)."""
    return get_labeller_class(name).create(embeddings=embeddings, tokenizer=tokenizer, **options)


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
            if name == OTHER:
                raise ValueError(f"{where}: {group} may not define {OTHER!r}; it is the fallback label")
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


class LexiconLabeller(ConceptLabeller):
    """Scores a component's top words against per-concept word lists in the model's own embedding space.

    A word's vector: the word is encoded as it stands and with a leading space (how a word appears inside a
    sentence); the encoding with fewer tokens wins (ties: the bare word), and a multi-token word gets the
    mean of its tokens' normalised embeddings. With ``center`` the vocabulary's mean embedding is subtracted
    first: embedding spaces are anisotropic (all cosines positive), and centring makes 0 mean "unrelated".

    Score of a concept for one pole's words W and the concept's words C: the mean cosine over all pairs
    (W x C) plus ``exact_weight`` times the share of W that are in C (case-insensitive). A component's
    score is the better of its two poles; its label is the best-scoring concept if that score reaches
    ``threshold``, else ``"other"`` (ties go to the concept listed first). Deterministic.
    """

    name = "lexicon"

    def __init__(
        self,
        embeddings: torch.Tensor,
        tokenizer: Any,
        lexicons: Mapping[str, Any] | None = None,
        threshold: float = 0.1,
        exact_weight: float = 1.0,
        center: bool = True,
    ):
        if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
            raise ValueError("embeddings must be a vocab x d_model tensor (the model's output embeddings)")
        self._encode = _encoder(tokenizer)
        self.lexicons = load_lexicons() if lexicons is None else validate_lexicons(lexicons)
        self.threshold = float(threshold)
        self.exact_weight = float(exact_weight)
        self.center = bool(center)
        # rows are read on demand: a real vocabulary x d_model matrix is not copied
        self._E = embeddings.detach()
        self._d = int(self._E.shape[1])
        self._mean = torch.mean(self._E, dim=0, dtype=torch.float32) if center else None
        self._cache: dict[str, torch.Tensor | None] = {}
        self.concepts = list(self.lexicons.get("task_concepts", {}))
        self.levels = list(self.lexicons.get("linguistic_levels", {}))
        # per group: names, the mean unit vector of each lexicon, the casefolded word sets
        self._centroids: dict[str, torch.Tensor] = {}
        self._word_sets: dict[str, list[set[str]]] = {}
        for group, entries in self.lexicons.items():
            cents = []
            for name, words in entries.items():
                vecs = self._vectors(words)
                if vecs is None:
                    logger.warning(
                        "lexicon %s.%s: no word maps to the vocabulary; exact matches only", group, name
                    )
                    cents.append(torch.zeros(self._d))
                else:
                    cents.append(vecs.mean(dim=0))
            self._centroids[group] = torch.stack(cents) if cents else torch.zeros(0, self._d)
            self._word_sets[group] = [{w.casefold() for w in words} for words in entries.values()]

    @classmethod
    def create(cls, *, embeddings: torch.Tensor | None, tokenizer: Any, **options) -> LexiconLabeller:
        """Options: ``lexicons`` (dict or path to a JSON file), ``threshold``, ``exact_weight``,
        ``center``."""
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
            "threshold": self.threshold,
            "exact_weight": self.exact_weight,
            "center": self.center,
            "lexicons_sha256": hashlib.sha256(digest.encode()).hexdigest()[:16],
        }

    def word_vector(self, word: str) -> torch.Tensor | None:
        """The unit vector of `word` (see the class docstring), or None if it encodes to no known token."""
        if word in self._cache:
            return self._cache[word]
        best: list[int] | None = None
        for variant in (word, " " + word):
            ids = [i for i in self._encode(variant) if 0 <= i < self._E.shape[0]]
            if ids and (best is None or len(ids) < len(best)):
                best = ids
        vec = None
        if best:
            rows = self._E[torch.tensor(best, device=self._E.device)].float()
            if self._mean is not None:
                rows = rows - self._mean
            rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
            v = rows.mean(dim=0).cpu()
            norm = v.norm()
            vec = v / norm if norm > 0 else None
        self._cache[word] = vec
        return vec

    def _vectors(self, words: Sequence[str]) -> torch.Tensor | None:
        vecs = [v for v in (self.word_vector(w) for w in words) if v is not None]
        return torch.stack(vecs) if vecs else None

    def scores(self, group: str, words: Sequence[str]) -> torch.Tensor:
        """Score of every entry of `group` (``"task_concepts"`` or ``"linguistic_levels"``) for `words`."""
        n = self._centroids[group].shape[0]
        if not words or n == 0:
            return torch.zeros(n)
        vecs = self._vectors(words)
        cos = torch.zeros(n) if vecs is None else self._centroids[group] @ vecs.mean(dim=0)
        folded = [w.casefold() for w in words]
        exact = torch.tensor([sum(w in s for w in folded) / len(folded) for s in self._word_sets[group]])
        return cos + self.exact_weight * exact

    def label(self, top_words_pos: Sequence[str], top_words_neg: Sequence[str]) -> ConceptLabel:
        result = ConceptLabel()
        for group, attr in LEXICON_GROUPS.items():
            names = list(self.lexicons.get(group, {}))
            if not names:
                continue
            pos, neg = self.scores(group, top_words_pos), self.scores(group, top_words_neg)
            best = torch.maximum(pos, neg)
            for name, value in zip(names, best.tolist()):
                result.scores[name] = round(float(value), 6)
            j = int(torch.argmax(best))  # first maximum: ties go to the concept listed first
            if float(best[j]) >= self.threshold:
                setattr(result, attr, names[j])
                if attr == "concept":
                    result.pole = "positive" if pos[j] >= neg[j] else "negative"
        return result


# -- local LM labeller
# -------------------------------------------------------------------------------------------
def parse_category(answer: str, categories: Sequence[str]) -> str:
    """The category a free-text answer names, or ``"other"``.

    Case-insensitive; a category matches at the start of a word (``"Mathematics"`` gives ``"math"``); when
    several appear, the one named first wins.
    """
    text = answer.casefold()
    found: list[tuple[int, int, str]] = []
    for order, cat in enumerate(categories):
        m = re.search(r"(?<![a-z])" + re.escape(cat.casefold()), text)
        if m:
            found.append((m.start(), order, cat))
    return min(found)[2] if found else OTHER


class LocalLMLabeller(ConceptLabeller):
    """Asks a local instruction-tuned causal LM to pick the concept and the linguistic level of a component.

    The model is loaded with transformers from ``model_path`` (nothing is downloaded when the path is a local
    folder), or passed in as ``model``/``lm_tokenizer``. Greedy decoding, a few new tokens; the answer is
    parsed by `parse_category`, so an unusable answer becomes ``"other"``.
    """

    name = "local_lm"

    def __init__(
        self,
        model: Any = None,
        lm_tokenizer: Any = None,
        model_path: str | Path | None = None,
        concepts: Sequence[str] | None = None,
        levels: Sequence[str] | None = None,
        max_new_tokens: int = 8,
    ):
        if model is None or lm_tokenizer is None:
            if model_path is None:
                raise ValueError(
                    "the local_lm labeller needs model_path (a local instruction-tuned model folder)"
                )
            from transformers import AutoModelForCausalLM, AutoTokenizer

            lm_tokenizer = AutoTokenizer.from_pretrained(model_path)
            model = AutoModelForCausalLM.from_pretrained(model_path)
            model.eval()
        self.model, self.lm_tokenizer, self.model_path = model, lm_tokenizer, str(model_path or "")
        if concepts is None or levels is None:
            lex = load_lexicons()
            concepts = list(lex["task_concepts"]) if concepts is None else concepts
            levels = list(lex["linguistic_levels"]) if levels is None else levels
        self.concepts, self.levels = list(concepts), list(levels)
        self.max_new_tokens = int(max_new_tokens)

    @classmethod
    def create(cls, *, embeddings: torch.Tensor | None, tokenizer: Any, **options) -> LocalLMLabeller:
        """Options: ``model_path`` (or ``model`` and ``lm_tokenizer``), ``concepts``, ``levels``,
        ``max_new_tokens``. The explained model's embeddings and tokenizer are not used."""
        return cls(**options)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_path": self.model_path,
            "concepts": self.concepts,
            "levels": self.levels,
        }

    def _prompt(self, words: str, kind: str, categories: Sequence[str]) -> str:
        question = (
            f"These words are the top words of one direction inside a language model: {words}. "
            f"Which {kind} do they express? Answer with exactly one of: {', '.join([*categories, OTHER])}."
        )
        tok = self.lm_tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
        return question + "\nAnswer:"

    def ask(self, prompt: str) -> str:
        """Greedy answer of the local model to `prompt` (the new text only)."""
        tok = self.lm_tokenizer
        enc = tok(prompt, return_tensors="pt")
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            out = self.model.generate(
                **enc, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad
            )
        return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def label(self, top_words_pos: Sequence[str], top_words_neg: Sequence[str]) -> ConceptLabel:
        words = ", ".join([*top_words_pos, *top_words_neg])
        concept_answer = self.ask(self._prompt(words, "task concept", self.concepts))
        level_answer = self.ask(self._prompt(words, "linguistic level", self.levels))
        logger.debug("local_lm answers: %r / %r", concept_answer, level_answer)
        return ConceptLabel(
            concept=parse_category(concept_answer, self.concepts),
            level=parse_category(level_answer, self.levels),
        )
