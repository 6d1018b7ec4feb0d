"""Tests for methods/concepts.py: lexicon labelling of planted concepts, the registry, the local-LM
plumbing."""

from __future__ import annotations

import json

import pytest
import torch

from lm_interp_plugin.methods.concepts import (
    LABELLERS,
    ConceptLabel,
    ConceptLabeller,
    LexiconLabeller,
    LocalLMLabeller,
    build_labeller,
    load_lexicons,
    parse_category,
    validate_lexicons,
)
from lm_interp_plugin.methods.ffn import component_top_words, normalise_rows

CODING_VOCAB = ["python", "function", "variable", "code", "compiler", "loop"]
MATH_VOCAB = ["sum", "equation", "integer", "algebra", "number"]
FILLER = ["cat", "dog", "river", "green", "fast", "slow", "tree", "house", "walk", "sing", "blue", "rain"]
LEXICONS = {
    # tests use exact_weight=0 where only the embeddings may link top words to a concept
    "task_concepts": {
        "writing": ["essay", "story", "poem"],
        "coding": ["compiler", "loop", "debug"],
        "math": ["algebra", "number", "theorem"],
        "translation": ["french", "translate"],
    },
    "linguistic_levels": {"morphology": ["suffix"], "syntax": ["clause"], "semantics": ["meaning"]},
}


class WordTokenizer:
    """Whole words are single tokens; "codebase" splits into "code" + "base"; unknown words give no ids."""

    def __init__(self, words):
        self.vocab = {w: i for i, w in enumerate(words)}

    def encode(self, text, add_special_tokens=False):
        word = text.strip()
        if word == "codebase":
            return [self.vocab["code"], self.vocab["base"]]
        return [self.vocab[word]] if word in self.vocab else []


def _planted_space(seed: int = 0, d: int = 128):
    """Embeddings where coding words cluster along one direction and math words along another."""
    gen = torch.Generator().manual_seed(seed)
    words = (
        CODING_VOCAB
        + MATH_VOCAB
        + FILLER
        + ["base", "essay", "story", "poem", "french", "translate", "suffix", "clause", "meaning"]
    )
    words += [f"w{i}" for i in range(300)]  # concepts are a small part of a vocabulary, as in a real model
    dirs, _ = torch.linalg.qr(torch.randn(d, 2, generator=gen))
    coding_dir, math_dir = dirs[:, 0], dirs[:, 1]
    E = 0.1 * torch.randn(len(words), d, generator=gen)
    for i, w in enumerate(words):
        if w in CODING_VOCAB:
            E[i] += 2.0 * coding_dir
        elif w in MATH_VOCAB:
            E[i] += 2.0 * math_dir
    return words, E, coding_dir, math_dir


def test_lexicon_labeller_recovers_planted_coding_component():
    words, E, coding_dir, math_dir = _planted_space()
    labeller = LexiconLabeller(E, WordTokenizer(words), lexicons=LEXICONS, exact_weight=0.0)
    # a component pointing at the coding cluster; its negative pole is unstructured filler
    ((pos, neg),) = component_top_words(coding_dir[None], normalise_rows(E), words, top_n=4)
    assert set(pos) <= set(CODING_VOCAB) and not set(neg) & set(CODING_VOCAB)
    label = labeller.label(pos, neg)
    assert label.concept == "coding" and label.pole == "positive"
    # words that are in no lexicon but sit in the coding cluster are still coding
    assert labeller.label(["python", "function", "variable"], []).concept == "coding"
    assert label.scores["coding"] > 0.3 > max(label.scores[c] for c in ("math", "writing", "translation"))
    # the score is the mean pairwise cosine in the centred embedding space (independent computation)
    Ec = E - E.mean(dim=0)
    Ec = Ec / Ec.norm(dim=1, keepdim=True)
    idx = {w: i for i, w in enumerate(words)}
    pairs = [float(Ec[idx[a]] @ Ec[idx[b]]) for a in pos for b in ("compiler", "loop")]  # "debug" is unknown
    assert label.scores["coding"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-5)
    # the math direction gives math
    ((pos_m, neg_m),) = component_top_words(math_dir[None], normalise_rows(E), words, top_n=4)
    assert labeller.label(pos_m, neg_m).concept == "math"
    # the same words as the negative pole still give coding, now from the negative side
    flipped = labeller.label(["cat", "dog"], pos)
    assert flipped.concept == "coding" and flipped.pole == "negative"
    # unrelated words stay below the threshold
    assert labeller.label(["cat", "river", "green"], ["slow", "tree"]).concept == "other"


def test_exact_matches_and_multi_token_words():
    words, E, *_ = _planted_space()
    E = torch.randn(E.shape, generator=torch.Generator().manual_seed(5))  # no structure: only exact matches
    labeller = LexiconLabeller(E, WordTokenizer(words), lexicons=LEXICONS, threshold=0.4)
    label = labeller.label(["story", "poem", "cat"], ["dog"])
    assert label.concept == "writing" and label.scores["writing"] >= 2 / 3 - 0.35
    assert labeller.label(["story", "cat", "dog", "river"], []).concept == "other"  # 1/4 < 0.4 with noise
    # a multi-token word is the mean of its tokens' unit vectors
    v = labeller.word_vector("codebase")
    expected = labeller.word_vector("code") + labeller.word_vector("base")
    torch.testing.assert_close(v, expected / expected.norm())
    assert labeller.word_vector("zzz-unknown") is None


def test_label_is_deterministic_and_ties_go_to_first_concept():
    words, E, *_ = _planted_space()
    labeller = LexiconLabeller(
        E, WordTokenizer(words), lexicons={"task_concepts": {"a": ["cat"], "b": ["cat"]}}, threshold=0.0
    )
    first = labeller.label(["cat"], [])
    assert first.concept == "a" and first.level == "other"
    assert labeller.label(["cat"], []) == first


def test_registry_did_you_mean_and_subclass_registration():
    assert {"lexicon", "local_lm"} <= set(LABELLERS)
    with pytest.raises(ValueError, match="Did you mean 'lexicon'"):
        build_labeller("lexcon")

    class Constant(ConceptLabeller):
        name = "constant_test"

        def __init__(self):
            self.concepts, self.levels = ["math"], []

        @classmethod
        def create(cls, *, embeddings, tokenizer, **options):
            return cls()

        def label(self, top_words_pos, top_words_neg):
            return ConceptLabel(concept="math")

    try:
        assert build_labeller("constant_test").label([], []).concept == "math"
    finally:
        LABELLERS.pop("constant_test")


def test_lexicon_validation_and_file(tmp_path):
    with pytest.raises(ValueError, match="must be a JSON object with keys"):
        validate_lexicons({"concepts": {}})
    with pytest.raises(ValueError, match="task_concepts.math must be a list of strings"):
        validate_lexicons({"task_concepts": {"math": "sum"}})
    with pytest.raises(ValueError, match="may not define 'other'"):
        validate_lexicons({"task_concepts": {"other": ["x"]}})
    path = tmp_path / "lex.json"
    path.write_text(json.dumps(LEXICONS))
    assert load_lexicons(path)["task_concepts"]["coding"] == ["compiler", "loop", "debug"]
    words, E, *_ = _planted_space()
    labeller = build_labeller("lexicon", embeddings=E, tokenizer=WordTokenizer(words), lexicons=str(path))
    assert labeller.concepts == ["writing", "coding", "math", "translation"]
    assert labeller.config()["name"] == "lexicon"


def test_packaged_lexicons_follow_the_schema():
    lex = load_lexicons()  # the packaged file ships: a missing one is a failure, not a skip
    assert {"writing", "coding", "math", "translation"} <= set(lex["task_concepts"])
    assert {"morphology", "syntax", "semantics"} <= set(lex["linguistic_levels"])


def test_parse_category():
    cats = ["writing", "coding", "math", "translation"]
    assert parse_category("Coding.", cats) == "coding"
    assert parse_category("  answer: MATHEMATICS", cats) == "math"
    assert parse_category("translation or maybe writing", cats) == "translation"  # first named wins
    assert parse_category("aftermath", cats) == "other"  # not at a word start
    assert parse_category("", cats) == "other"


def test_local_lm_labeller_plumbing_with_tiny_random_model():
    from lm_interp_plugin.testing.tiny import build_tiny_model, sample_corpus, train_tokenizer

    tok = train_tokenizer(sample_corpus(), vocab_size=300)
    model = build_tiny_model("llama", tok, hidden=32, layers=1, heads=2, kv_heads=1)
    labeller = build_labeller(
        "local_lm",
        model=model,
        lm_tokenizer=tok,
        concepts=["coding", "math"],
        levels=["syntax"],
        max_new_tokens=4,
    )
    assert isinstance(labeller, LocalLMLabeller)
    label = labeller.label(["python", "code"], ["sum"])
    assert label.concept == "other" and label.level == "other"  # a random model's junk parses to "other"
    with pytest.raises(ValueError, match="needs model_path"):
        LocalLMLabeller(concepts=["x"], levels=[])
