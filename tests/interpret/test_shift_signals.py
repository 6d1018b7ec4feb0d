"""Issue 23's signals through the real pass (`build_pass`), each against an independent computation: the
reference shift against a direct two-model loop, the lens against a hand-written one, the contrast against one
backward per choice; and Gemma-2's soft-capped logits (an identical reference must give KL 0)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_shift_methods import PROMPT, _direct_shift, _hand_lens, _per_choice_contrast

from lm_interp_plugin.interpret import build_pass
from lm_interp_plugin.interpret.settings import InterpSettings
from lm_interp_plugin.interpret.signals.contrastive import FOIL
from lm_interp_plugin.interpret.signals.reference_shift import REFERENCE

from tolerances import assert_matrix_close

SIGNALS = "reference_shift+logit_lens+contrastive"


def _pass(model, reference, tokenizer, gold: str, foil: str):
    prompt = tokenizer(PROMPT)["input_ids"]
    target = tokenizer(gold, add_special_tokens=False)["input_ids"]
    foil_ids = tokenizer(foil, add_special_tokens=False)["input_ids"]
    labels = ["special"] + ["instruction"] * 7 + ["content"] * (len(prompt) - 8)
    interpreter = build_pass(model, tokenizer, InterpSettings(ffn=False, signals=SIGNALS))
    interpreter.resources[REFERENCE] = reference
    result = interpreter.run(prompt, target, labels, resources={FOIL: foil_ids})
    return result, prompt, target, foil_ids


def test_signals_through_the_pass_equal_independent_computations(tiny_model, lm_tokenizer):
    model, reference = tiny_model("llama", seed=3, layers=3), tiny_model("llama", seed=4, layers=3)
    result, prompt, target, foil = _pass(
        model, reference, lm_tokenizer, " le chat", " the dog sat on the mat"
    )
    shift = result.details["reference_shift"]
    kl, ranks, top_e, _ = _direct_shift(model, reference, prompt, target)
    np.testing.assert_allclose(shift.kl, kl, rtol=1e-4, atol=1e3 * torch.finfo(torch.float32).eps)
    assert shift.ranks == ranks and shift.evaluated_top == top_e
    assert result.metrics["reference_kl"] == pytest.approx(float(np.mean(kl)), rel=1e-4)
    assert result.metrics["token_shift_shifted"] == pytest.approx(np.mean([r >= 3 for r in ranks]))
    hand_ranks, _ = _hand_lens(model, prompt, target)
    assert np.array_equal(np.asarray(result.details["logit_lens"].ranks), hand_ranks)
    expected, (lp_gold, lp_foil) = _per_choice_contrast(model, prompt, target, foil)
    assert result.details["contrastive"].route == "pass"  # the foil rode in the pass's own backward
    assert_matrix_close(np.asarray(result.details["contrastive"].raw)[:, None], expected[:, None])
    assert result.metrics["contrastive_margin"] == pytest.approx(lp_gold - lp_foil, rel=1e-4, abs=1e-4)
    shares = [v for k, v in result.metrics.items() if k.startswith("contrastive_share_")]
    assert sum(shares) == pytest.approx(1.0)


def test_an_identical_gemma2_reference_gives_zero_kl_through_its_soft_cap(tiny_model, lm_tokenizer):
    """Gemma-2 soft-caps its logits after the output head; the captured head output must be capped the same
    way as the reference's final logits, or an identical reference would show a shift."""
    model = tiny_model("gemma2", seed=2)
    model.config.final_logit_softcapping = 0.5  # a cap the tiny model's logits reach: capping matters
    result, *_ = _pass(model, copy.deepcopy(model), lm_tokenizer, " le chat", " the dog")
    # the same logits by two forwards agree to float32 rounding; the KL of two such distributions is O(eps^2)
    assert result.metrics["reference_kl"] < 1e-8
    assert result.metrics["token_shift_shifted"] == 0.0 and result.metrics["top_token_agreement"] == 1.0


def test_a_foil_the_pass_cannot_carry_gets_its_own_backward_with_the_same_contrast(tiny_model, lm_tokenizer):
    """Sliding-window layers that evicted prompt positions: the cache cannot be cut back to the prompt, so
    the foil has a forward and backward of its own (the detail's route and a note say so); same contrast."""
    model = tiny_model("gemma2", seed=5)
    model.config.sliding_window = 4
    result, prompt, target, foil = _pass(model, model, lm_tokenizer, " le chat", " the dog sat on the mat")
    assert result.details["contrastive"].route == "separate_foil"
    assert any("sliding-window" in note for note in result.notes)
    expected, (lp_gold, lp_foil) = _per_choice_contrast(model, prompt, target, foil)
    assert_matrix_close(np.asarray(result.details["contrastive"].raw)[:, None], expected[:, None])
    assert result.metrics["contrastive_margin"] == pytest.approx(lp_gold - lp_foil, rel=1e-4, abs=1e-4)
