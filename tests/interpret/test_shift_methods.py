"""Issue 23's pure computations, each against an independent computation: the reference shift against a direct
two-model loop, the logit lens against a hand-written one, the contrastive attribution against one backward
per choice. Plus the planted cases (an identical reference; a reference that differs in one unembedding row).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lm_interp_plugin.arch import get_adapter
from lm_interp_plugin.interpret.capture import capture
from lm_interp_plugin.methods.contrastive import (
    ContrastiveError,
    best_other_choice,
    contrastive_density,
    contrastive_gradient_x_input,
    contrastive_shares,
)
from lm_interp_plugin.methods.logit_lens import LogitLensError, logit_lens
from lm_interp_plugin.methods.shift import ShiftError, distribution_shift, target_logits
from tests.tolerances import assert_matrix_close

PROMPT = "Rewrite the sentence in French.\n\nInput: the cat sat on the mat.\n\nOutput:"
EPS32 = float(torch.finfo(torch.float32).eps)


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model("llama", seed=3, layers=3)


@pytest.fixture(scope="module")
def other(tiny_model):
    return tiny_model("llama", seed=4, layers=3)


@pytest.fixture(scope="module")
def pair(lm_tokenizer, model):
    """The prompt's ids and the model's own greedy continuation (12 tokens)."""
    prompt = lm_tokenizer(PROMPT)["input_ids"]
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(12):
            nxt = model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return prompt, ids[0, len(prompt) :].tolist()


def _direct_logits(model, prompt, target, n):
    """Logits predicting target n: a full forward of prompt + target[:n], the last position read."""
    ids = torch.tensor([list(prompt) + list(target[:n])])
    with torch.no_grad():
        return model(ids).logits[0, -1].double().numpy()


def _direct_shift(evaluated, reference, prompt, target):
    """The two-model loop: per position, a separate forward of each model, KL and ranks in numpy."""
    kl, ranks, top_e, top_r = [], [], [], []
    for n in range(len(target)):
        le, lr = _direct_logits(evaluated, prompt, target, n), _direct_logits(reference, prompt, target, n)
        pe = np.exp(le - le.max()) / np.exp(le - le.max()).sum()
        pr = np.exp(lr - lr.max()) / np.exp(lr - lr.max()).sum()
        kl.append(float(np.sum(pe * (np.log(pe) - np.log(pr)))))
        token = int(np.argmax(le))
        order = list(np.argsort(-lr, kind="stable"))
        ranks.append(order.index(token))
        top_e.append(token)
        top_r.append(int(np.argmax(lr)))
    return kl, ranks, top_e, top_r


def test_shift_equals_a_direct_two_model_loop(model, other, pair):
    prompt, target = pair
    got = distribution_shift(target_logits(model, prompt, target), target_logits(other, prompt, target))
    kl, ranks, top_e, top_r = _direct_shift(model, other, prompt, target)
    # logits agree to a few float32 ulps of their size; the KL inherits about that (times a few terms)
    np.testing.assert_allclose(got.kl, kl, rtol=1e-4, atol=1e3 * EPS32)
    assert got.ranks == ranks and got.evaluated_top == top_e and got.reference_top == top_r
    differs = [n for n in range(len(target)) if top_e[n] != top_r[n]]
    assert got.first_divergence == (differs[0] if differs else None)
    assert got.mean_kl == pytest.approx(float(np.mean(kl)), rel=1e-4)
    assert got.shifted_fraction == pytest.approx(np.mean([r >= 3 for r in ranks]))
    assert got.marginal_fraction == pytest.approx(np.mean([1 <= r <= 2 for r in ranks]))
    assert max(kl) > 0.01 and differs, "two random models should disagree, or the test proves nothing"


def test_identical_reference_has_zero_kl_and_no_shift(model, pair):
    prompt, target = pair
    reference = copy.deepcopy(model)
    got = distribution_shift(target_logits(model, prompt, target), target_logits(reference, prompt, target))
    assert got.kl == [0.0] * len(target)
    assert got.ranks == [0] * len(target) and got.shifted_fraction == 0.0
    assert got.first_divergence is None and got.top_agreement == 1.0


def test_one_unembedding_row_shifts_exactly_that_tokens_positions(model, pair):
    prompt, target = pair
    counts = {t: target.count(t) for t in target}
    token = max((t for t in counts if counts[t] < len(target)), key=lambda t: counts[t])
    reference = copy.deepcopy(model)
    assert not model.config.tie_word_embeddings  # the row changes the output only, not the input embedding
    with torch.no_grad():
        get_adapter(reference).output_head_module().weight[token] = 0.0  # its logit becomes 0 everywhere
    got = distribution_shift(target_logits(model, prompt, target), target_logits(reference, prompt, target))
    planted = [n for n, t in enumerate(target) if t == token]  # greedy target: the evaluated top-1 tokens
    assert [n for n, c in enumerate(got.categories()) if c == "shifted"] == planted
    assert all(got.ranks[n] == 0 for n in range(len(target)) if n not in planted)
    assert got.first_divergence == planted[0]
    assert got.shifted_fraction == pytest.approx(len(planted) / len(target))


def test_shift_errors_name_the_problem():
    with pytest.raises(ShiftError, match="same vocabulary"):
        distribution_shift(torch.zeros(2, 5), torch.zeros(2, 6))
    with pytest.raises(ShiftError, match="empty target"):
        distribution_shift(torch.zeros(0, 5), torch.zeros(0, 5))


def _hand_lens(model, prompt, target):
    """The logit lens written out: every layer's output by hand through the decoder, then norm and head."""
    ids = torch.tensor([list(prompt) + list(target[:-1])])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        layers = len(model.model.layers)
        ranks = np.zeros((layers, len(target)), dtype=int)
        for layer in range(layers):
            hidden = out.hidden_states[layer + 1][0, -len(target) :]
            if layer < layers - 1:  # transformers hands back the last layer's output already normed
                hidden = model.model.norm(hidden)
            logits = model.lm_head(hidden).double().numpy()
            for n, token in enumerate(target):
                ranks[layer, n] = int(np.sum(logits[n] > logits[n, token]))
        final = out.logits[0, -len(target) :]
    return ranks, final


def _target_residuals(model, prompt, target) -> torch.Tensor:
    """Each layer's residual stream at the positions that predict `target` (the capture the pass uses)."""
    ids = torch.tensor([list(prompt) + list(target[:-1])])
    captured = {}
    with torch.no_grad(), capture(model, ["resid_post"], len(target), captured):
        model(ids)
    return torch.stack([r[0] for r in captured["resid_post"]])


def test_logit_lens_equals_a_hand_written_lens(model, pair):
    prompt, target = pair
    adapter = get_adapter(model)
    residuals = _target_residuals(model, prompt, target)
    got = logit_lens(adapter, residuals, target)
    ranks, _ = _hand_lens(model, prompt, target)
    assert np.array_equal(np.asarray(got.ranks), ranks)
    for n in range(len(target)):
        top = [layer for layer in range(ranks.shape[0]) if ranks[layer, n] == 0]
        assert got.first_layer[n] == (top[0] if top else None)
    # the target is the model's greedy continuation: the last layer ranks every target token first
    assert got.ranks[-1] == [0] * len(target)
    assert got.answer_depth == pytest.approx((got.answer_layer + 1) / 3)


def test_logit_lens_of_a_token_the_model_ranks_last(model, pair):
    """A target the lens never ranks first has no answer layer (absent, not 0)."""
    prompt, target = pair
    adapter = get_adapter(model)
    residuals = _target_residuals(model, prompt, target)
    final = _direct_logits(model, prompt, target, 0)
    worst = int(np.argmin(final))
    got = logit_lens(adapter, residuals[:, :1], [worst])
    assert got.ranks[-1][0] == len(final) - 1  # the final layer ranks it last
    if all(row[0] > 0 for row in got.ranks):
        assert got.answer_layer is None and got.answer_depth is None
    with pytest.raises(LogitLensError, match="one row per target"):
        logit_lens(adapter, residuals, target[:2])


def _per_choice_contrast(model, prompt, gold, foil):
    """One backward per choice on its own unpadded sequence, then the difference of the gradient x input."""
    embed = model.get_input_embeddings()
    grads, scores = [], []
    for answer in (gold, foil):
        with torch.no_grad():
            base = embed(torch.tensor([list(prompt) + list(answer[:-1])]))
        leaf = base[:, : len(prompt)].clone().requires_grad_(True)
        logits = model(inputs_embeds=torch.cat([leaf, base[:, len(prompt) :]], dim=1)).logits[0]
        logp = logits[len(prompt) - 1 :].log_softmax(-1)
        score = logp[torch.arange(len(answer)), torch.tensor(answer)].sum()
        (grad,) = torch.autograd.grad(score, leaf)
        grads.append((grad[0] * leaf.detach()[0]).sum(-1))
        scores.append(float(score.detach()))
    model.zero_grad(set_to_none=True)
    return (grads[0] - grads[1]).numpy(), scores


def test_contrastive_equals_one_backward_per_choice(model, lm_tokenizer):
    prompt = lm_tokenizer(PROMPT)["input_ids"]
    gold = lm_tokenizer(" le chat", add_special_tokens=False)["input_ids"]
    foil = lm_tokenizer(" the dog sat on the mat", add_special_tokens=False)["input_ids"]
    assert len(gold) != len(foil)  # the padded row is exercised
    got = contrastive_gradient_x_input(model, prompt, gold, foil)
    expected, (lp_gold, lp_foil) = _per_choice_contrast(model, prompt, gold, foil)
    assert_matrix_close(got.raw[:, None], expected[:, None])
    assert got.logprob_gold == pytest.approx(lp_gold, rel=1e-5)
    assert got.margin == pytest.approx(lp_gold - lp_foil, rel=1e-4, abs=1e-4)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_contrastive_density_shares_and_foil():
    raw = np.array([0.5, -1.0, 0.25, 1.0, 0.0])
    density = contrastive_density(raw, L=10)
    np.testing.assert_allclose(density, [0.5, 0.0, 0.3, 1.0, 0.0])  # ceil(10 * relu(c) / max) / 10
    shares = contrastive_shares(density, ["instruction", "instruction", "content", "content", "template"])
    assert shares == pytest.approx({"instruction": 0.5 / 1.8, "content": 1.3 / 1.8, "template": 0.0})
    assert contrastive_shares(contrastive_density(-np.abs(raw)), ["a"] * 5) is None  # no positive contrast
    assert best_other_choice([-3.0, -1.0, -2.0], gold=1) == 2  # right: the runner-up
    assert best_other_choice([-3.0, -1.0, -2.0], gold=0) == 1  # wrong: the model's choice
    with pytest.raises(ContrastiveError, match="need >= 2 choices"):
        best_other_choice([-1.0], gold=0)
    with pytest.raises(ContrastiveError, match="nothing to contrast"):
        contrastive_gradient_x_input(None, [1, 2], [3], [3])


@pytest.mark.parametrize("objective", ["prob", "logprob"])
def test_contrast_from_the_pass_gold_matrix_equals_the_full_contrast(model, lm_tokenizer, objective):
    from lm_interp_plugin.methods.attribution import gradient_x_input
    from lm_interp_plugin.methods.contrastive import contrast_with_gold_term, gold_term

    prompt = lm_tokenizer(PROMPT)["input_ids"]
    gold = lm_tokenizer(" le chat", add_special_tokens=False)["input_ids"]
    foil = lm_tokenizer(" the dog sat on the mat", add_special_tokens=False)["input_ids"]
    attribution = gradient_x_input(model, torch.tensor(prompt), torch.tensor(gold), objective=objective)
    term = gold_term(attribution.raw.numpy(), attribution.target_logprobs.numpy(), objective)
    got = contrast_with_gold_term(model, prompt, term, float(attribution.target_logprobs.sum()), foil)
    full = contrastive_gradient_x_input(model, prompt, gold, foil)
    assert_matrix_close(got.raw[:, None], full.raw[:, None])
    assert got.margin == pytest.approx(full.margin, rel=1e-4, abs=1e-4)
    assert gold_term(np.ones((3, 1)), np.array([-200.0]), "prob") is None  # p underflows: no rescaling


GOLD, FOIL = " le chat", " the dog sat on the mat"


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
@pytest.mark.parametrize(("gold_tokens", "foil_tokens"), [(1, 1), (None, 1), (1, None), (None, None)])
def test_the_foil_row_of_the_pass_equals_one_backward_per_choice(
    tiny_model, lm_tokenizer, family, gold_tokens, foil_tokens
):
    """The foil as one more row of the pass's backward (its first token from the gold's first logits, the
    rest on the prompt's key/value cache) gives the contrast of one backward per choice; single-token and
    multi-token answers of both kinds, under three families' attention and caches."""
    from lm_interp_plugin.methods.attribution import gradient_x_input

    model = tiny_model(family, seed=5)
    prompt = lm_tokenizer(PROMPT)["input_ids"]
    gold = lm_tokenizer(GOLD, add_special_tokens=False)["input_ids"][:gold_tokens]
    foil = lm_tokenizer(FOIL, add_special_tokens=False)["input_ids"][:foil_tokens]
    out = gradient_x_input(model, torch.tensor(prompt), torch.tensor(gold), foil_ids=torch.tensor(foil))
    assert out.foil is not None, out.foil_skipped
    expected, (lp_gold, lp_foil) = _per_choice_contrast(model, prompt, gold, foil)
    assert_matrix_close((out.foil.gold_raw - out.foil.raw).numpy()[:, None], expected[:, None])
    assert out.foil.logprob == pytest.approx(lp_foil, rel=1e-4, abs=len(foil) * 1e2 * EPS32)
    assert float(out.target_logprobs.sum()) == pytest.approx(lp_gold, rel=1e-4, abs=len(gold) * 1e2 * EPS32)
    # the gold columns are the pass's own matrix, unchanged by the foil's row
    alone = gradient_x_input(model, torch.tensor(prompt), torch.tensor(gold))
    assert_matrix_close(out.raw.numpy(), alone.raw.numpy())


def test_the_foil_is_skipped_with_its_reason_where_the_pass_cannot_carry_it(tiny_model, lm_tokenizer):
    from lm_interp_plugin.methods.attribution import gradient_x_input

    model = tiny_model("gemma2", seed=5)
    prompt = torch.tensor(lm_tokenizer(PROMPT)["input_ids"])
    gold = torch.tensor(lm_tokenizer(GOLD, add_special_tokens=False)["input_ids"])
    foil = torch.tensor(lm_tokenizer(FOIL, add_special_tokens=False)["input_ids"])
    out = gradient_x_input(model, prompt, gold, foil_ids=foil, mode="forward")
    assert out.foil is None and "forward mode" in out.foil_skipped
    model.config.sliding_window = 4  # the window evicted prompt positions: the cache cannot be cut back
    out = gradient_x_input(model, prompt, gold, foil_ids=foil)
    assert out.foil is None and "sliding-window" in out.foil_skipped
    assert gradient_x_input(model, prompt, gold, foil_ids=foil[:1]).foil is not None  # no cache needed
