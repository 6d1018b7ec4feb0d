"""Issue 23's harness pieces: the reference model's tokenizer check and loading, and the multiple-choice
grouping that finds each gold request's foil."""

from __future__ import annotations

import pytest
from lm_eval.api.instance import Instance

from lm_interp_plugin.harness.choices import Foil, foils
from lm_interp_plugin.harness.reference import (
    ReferenceModelError,
    check_same_vocab,
    load_reference,
    vocab_differences,
    with_reference_signal,
)
from lm_interp_plugin.harness.tasks import tag_of


def _request(doc_id: int, idx: int, role: str, context: str = "Q: 2+2?\nA:", task: str = "t") -> Instance:
    inst = Instance(
        request_type="loglikelihood",
        doc={"q": doc_id},
        arguments=(context, f" choice{idx}"),
        idx=idx,
        metadata=(task, doc_id, 1),
    )
    tag_of(inst).role = role
    return inst


def test_foil_is_the_best_other_choice_per_document():
    reqs = [
        _request(0, 0, "choice"),
        _request(0, 1, "gold"),
        _request(0, 2, "choice"),
        _request(1, 0, "gold"),
        _request(1, 1, "choice"),
        _request(0, 0, "gold", task="other"),  # another task's doc 0: its own group
    ]
    results = [(-3.0, False), (-1.0, True), (-2.0, False), (-4.0, False), (-0.5, True), (-1.0, True)]
    got = foils(reqs + [reqs[0]], results + [results[0]])  # a repeated Instance counts once
    right, wrong = got[id(reqs[1])], got[id(reqs[3])]
    assert isinstance(right, Foil) and right.continuation == " choice2" and right.n_choices == 3
    assert right.model_correct and right.logprob_gold == -1.0 and right.logprob_foil == -2.0
    assert isinstance(wrong, Foil) and wrong.continuation == " choice1" and not wrong.model_correct
    assert got[id(reqs[5])] == "the document has a single choice: nothing to contrast"
    assert set(got) == {id(reqs[1]), id(reqs[3]), id(reqs[5])}  # only gold requests get an answer


def test_foil_ties_go_to_the_first_choice_and_untagged_requests_are_ignored():
    reqs = [_request(0, 0, "gold"), _request(0, 1, "choice"), _request(0, 2, "choice")]
    got = foils(reqs, [(-1.0, True), (-2.0, False), (-2.0, False)])
    assert got[id(reqs[0])].continuation == " choice1"
    plain = Instance("loglikelihood", {}, ("ctx", " x"), 0, ("t", 0, 1))  # a task that tags nothing
    assert foils([plain], [(-1.0, True)]) == {}


def test_vocab_differences_name_the_first_mismatches():
    a = {"a": 0, "b": 1, "c": 2}
    assert vocab_differences(a, dict(a)) == []
    diffs = vocab_differences(a, {"a": 0, "b": 2, "c": 1, "d": 3})
    assert diffs[0] == "3 tokens in the evaluated model's vocabulary, 4 in the reference's"
    assert diffs[1] == "token 'b': id 1 in the evaluated model, id 2 in the reference"
    assert vocab_differences(a, {"a": 0, "b": 1, "z": 2})[-1].startswith("token 'c': id 2")


def test_reference_with_another_tokenizer_fails_once_and_clearly(
    tmp_path, lm_tokenizer, tiny_llama_dir, tiny_model
):
    from transformers import AutoModelForCausalLM

    from lm_interp_plugin.testing.tiny import sample_corpus, save_tiny, train_tokenizer

    other_tok = train_tokenizer(sample_corpus(), vocab_size=300)
    other_dir = save_tiny(tiny_model("llama", tokenizer=other_tok, seed=1), other_tok, tmp_path / "other")
    evaluated = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with pytest.raises(ReferenceModelError, match=r"interp_reference=.*tokenizer differs.*same tokenizer"):
        load_reference(str(other_dir), evaluated, lm_tokenizer)
    with pytest.raises(ReferenceModelError, match="tokenizer could not be loaded"):
        load_reference(str(tmp_path / "missing"), evaluated, lm_tokenizer)
    check_same_vocab(lm_tokenizer, lm_tokenizer, "same")  # no error
    wider = tiny_model("llama", seed=1)
    wider.resize_token_embeddings(len(lm_tokenizer) + 8)  # same tokenizer, a padded output layer
    with pytest.raises(ReferenceModelError, match="same vocabulary size"):
        load_reference(str(save_tiny(wider, lm_tokenizer, tmp_path / "wider")), evaluated, lm_tokenizer)


def test_reference_loads_frozen_on_the_evaluated_models_dtype(
    tmp_path, lm_tokenizer, tiny_llama_dir, tiny_model
):
    import torch
    from transformers import AutoModelForCausalLM

    from lm_interp_plugin.testing.tiny import save_tiny

    ref_dir = save_tiny(tiny_model("llama", seed=5), lm_tokenizer, tmp_path / "ref")
    evaluated = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16)
    ref = load_reference(str(ref_dir), evaluated, lm_tokenizer)
    param = next(ref.model.parameters())
    assert param.dtype == torch.bfloat16 and not param.requires_grad and not ref.model.training
    assert ref.fingerprint["weight_hash"] and ref.name == str(ref_dir)


def test_a_reference_turns_the_shift_signal_on_and_the_signal_needs_one():
    assert with_reference_signal({"interp_reference": "base"})["interp_signals"] == "reference_shift"
    got = with_reference_signal({"interp_reference": "base", "interp_signals": "entropy+logit_lens"})
    assert got["interp_signals"] == "entropy+logit_lens+reference_shift"
    assert with_reference_signal({"interp_signals": "entropy"}) == {"interp_signals": "entropy"}
    with pytest.raises(ReferenceModelError, match="add interp_reference=PATH"):
        with_reference_signal({"interp_signals": "reference_shift"})
