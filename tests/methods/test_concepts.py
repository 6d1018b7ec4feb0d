"""Tests for methods/concepts.py and concept_llm.py: calibrated labels (planted concepts found, random
directions not), the FDR machinery, the registry and specs, the LLM judge's deterministic scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lm_interp_plugin.methods.concept_llm import LLMLabeller
from lm_interp_plugin.methods.concepts import (
    LABELLERS,
    NONE,
    ConceptLabel,
    ConceptLabeller,
    LexiconLabeller,
    benjamini_hochberg,
    build_labeller,
    empirical_p,
    fdr_labels,
    load_lexicons,
    load_validation_categories,
    parse_labeller_spec,
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


def _labeller(E, words, **kw):
    return LexiconLabeller(E, WordTokenizer(words), lexicons=LEXICONS, pool=words, n_null=999, **kw)


def test_planted_concepts_beat_random_directions_and_random_components_do_not():
    words, E, coding_dir, math_dir = _planted_space()
    labeller = _labeller(E, words)
    gen = torch.Generator().manual_seed(1)
    random_dirs = torch.randn(10, E.shape[1], generator=gen)
    comps = torch.cat([coding_dir[None], math_dir[None], random_dirs])
    poles = component_top_words(comps, normalise_rows(E), words, top_n=4)
    assert set(poles[0][0]) <= set(CODING_VOCAB)
    labels = labeller.label_all(poles)
    assert labels[0].concept == "coding" and labels[0].pole == "positive"
    assert labels[1].concept == "math"
    assert all(lab.concept == NONE for lab in labels[2:])  # random directions: no concept
    # the evidence is recorded: p-values per concept, a q-value per component
    assert labels[0].p_values["coding"] == pytest.approx(1 / 1000)  # no null direction scores higher
    assert labels[0].q_concept <= 0.05 and all(lab.q_concept > 0.05 for lab in labels[2:])
    # the same words at the negative pole: still coding, from the negative side
    flipped = labeller.label_all([(poles[5][0], poles[0][0]), *poles[1:]])
    assert flipped[0].concept == "coding" and flipped[0].pole == "negative"
    # deterministic given the seed
    assert labeller.label_all(poles) == labels


def test_multi_token_words_and_unknown_words():
    words, E, *_ = _planted_space()
    labeller = _labeller(E, words)
    v = labeller.word_vector("codebase")
    expected = labeller.word_vector("code") + labeller.word_vector("base")
    torch.testing.assert_close(v, expected / expected.norm())
    assert labeller.word_vector("zzz-unknown") is None
    # unknown words only: every concept's score is 0, nothing is labelled
    label = labeller.label(["zzz"], ["yyy"])
    assert label.concept == NONE and set(label.scores.values()) == {0.0}


def test_fdr_machinery_against_hand_computation():
    assert empirical_p(np.array(3.0), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(3 / 5)
    assert empirical_p(np.array(9.0), np.array([1.0, 2.0])) == pytest.approx(1 / 3)  # never 0
    # sorted .01 .03 .04 .2 -> x m/rank .04 .06 .0533 .2 -> running minimum from the top
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.2])
    np.testing.assert_allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.2], rtol=1e-12)
    # Bonferroni over a component's two names, then BH over the components
    chosen, qc = fdr_labels(np.array([[0.001, 0.5], [0.3, 0.02], [0.9, 0.8]]), alpha=0.05)
    np.testing.assert_allclose(qc, [0.006, 0.06, 1.0], rtol=1e-12)
    assert chosen.tolist() == [0, -1, -1]


def test_registry_specs_and_did_you_mean():
    assert "lexicon" in LABELLERS
    assert parse_labeller_spec("lexicon") == ("lexicon", {})
    assert parse_labeller_spec("llm:/m/smol") == ("llm", {"model_path": "/m/smol"})
    assert parse_labeller_spec("llm:/m/pkg::SmolLM2.gguf") == (
        "llm",
        {"model_path": "/m/pkg", "gguf_file": "SmolLM2.gguf"},
    )
    with pytest.raises(ValueError, match="Did you mean 'lexicon'"):
        build_labeller("lexcon")
    with pytest.raises(ValueError, match="give the judge"):
        build_labeller("llm:")
    with pytest.raises(ValueError, match="needs a judge model"):
        build_labeller("llm")

    class Constant(ConceptLabeller):
        name = "constant_test"

        def __init__(self):
            self.concepts, self.levels = ["math"], []

        @classmethod
        def create(cls, *, embeddings, tokenizer, **options):
            return cls()

        def label_all(self, poles, directions=None):
            return [ConceptLabel(concept="math") for _ in poles]

    try:
        assert build_labeller("constant_test").label([], []).concept == "math"
    finally:
        LABELLERS.pop("constant_test")


def test_lexicon_validation_and_file(tmp_path):
    with pytest.raises(ValueError, match="must be a JSON object with keys"):
        validate_lexicons({"concepts": {}})
    with pytest.raises(ValueError, match="task_concepts.math must be a list of strings"):
        validate_lexicons({"task_concepts": {"math": "sum"}})
    with pytest.raises(ValueError, match="may not define 'none'"):
        validate_lexicons({"task_concepts": {"none": ["x"]}})
    path = tmp_path / "lex.json"
    path.write_text(json.dumps(LEXICONS))
    assert load_lexicons(path)["task_concepts"]["coding"] == ["compiler", "loop", "debug"]
    words, E, *_ = _planted_space()
    labeller = build_labeller(
        "lexicon", embeddings=E, tokenizer=WordTokenizer(words), lexicons=str(path), pool=words
    )
    assert labeller.concepts == ["writing", "coding", "math", "translation"]
    assert labeller.config()["name"] == "lexicon" and labeller.config()["alpha"] == 0.05
    with pytest.raises(ValueError, match="no get_vocab"):
        build_labeller("lexicon", embeddings=E, tokenizer=WordTokenizer(words))


def test_packaged_lexicons_follow_the_schema():
    lex = load_lexicons()  # the packaged file ships: a missing one is a failure, not a skip
    assert {"writing", "coding", "math", "translation"} <= set(lex["task_concepts"])
    assert {"morphology", "syntax", "semantics"} <= set(lex["linguistic_levels"])
    validation = load_validation_categories()
    assert set(validation) == set(lex["task_concepts"])  # every concept can be validated


@pytest.fixture(scope="module")
def tiny_judge(tiny_model):
    from lm_interp_plugin.testing.tiny import sample_corpus, train_tokenizer

    tok = train_tokenizer(sample_corpus(), vocab_size=300)
    model = tiny_model("llama", tokenizer=tok, hidden=32, layers=1, heads=2, kv_heads=1)
    return model, tok


@pytest.mark.slow
def test_llm_judge_scores_answers_by_log_likelihood(tiny_judge):
    model, tok = tiny_judge
    labeller = LLMLabeller(model=model, lm_tokenizer=tok, concepts=["coding", "math"], batch_size=3)
    prompts = [labeller._prompt(["code", "loop"], ["cat"], "topic", ["coding", "math", NONE]), "short"]
    options = ["coding", "math", NONE]
    lp = labeller.answer_logprobs(prompts, options)
    # independent computation: one unpadded forward per (prompt, answer), summing log p of the answer tokens
    for i, prompt in enumerate(prompts):
        p_ids = tok.encode(prompt)
        for j, option in enumerate(options):
            a_ids = tok.encode(" " + option, add_special_tokens=False)
            with torch.no_grad():
                logits = model(torch.tensor([p_ids + a_ids])).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            expected = sum(float(logp[len(p_ids) - 1 + t, a]) for t, a in enumerate(a_ids))
            assert lp[i, j] == pytest.approx(expected, abs=1e-4 * max(1, len(a_ids)))
    np.testing.assert_array_equal(labeller.answer_logprobs(prompts, options), lp)  # deterministic


@pytest.mark.slow
def test_llm_labeller_calibrates_against_random_directions(tiny_judge):
    model, tok = tiny_judge
    from lm_interp_plugin.methods.vocab import whole_word_vocab

    E = model.get_output_embeddings().weight.detach()
    labeller = build_labeller(
        "llm", embeddings=E, tokenizer=tok, model=model, lm_tokenizer=tok, n_null=16, batch_size=8
    )
    vocab = whole_word_vocab(tok)
    comps = torch.randn(6, E.shape[1], generator=torch.Generator().manual_seed(2))
    poles = component_top_words(comps, normalise_rows(E[torch.tensor(vocab.token_ids)]), vocab.words, 3)
    labels = labeller.label_all(poles)
    assert all(lab.concept == NONE for lab in labels)  # a random judge on random directions: no concept
    assert all(set(lab.p_values) == set(labeller.concepts) for lab in labels)
    assert labeller.config()["judge_fingerprint"] == "in-memory" and labeller.levels == []


def test_too_few_whole_words_label_nothing(caplog):
    words, E, coding_dir, _ = _planted_space()
    labeller = LexiconLabeller(E, WordTokenizer(words), lexicons=LEXICONS, pool=CODING_VOCAB, n_null=99)
    assert "no label can be tested" in caplog.text
    poles = component_top_words(coding_dir[None], normalise_rows(E), words, top_n=4)
    assert labeller.label_all(poles)[0].concept == NONE  # even a planted concept: there is no null
