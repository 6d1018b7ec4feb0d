"""Integrated gradients checked against a slow per-step, per-target loop with plain backward, plus
completeness."""

from __future__ import annotations

import math

import pytest
import torch

from lm_interp_plugin.methods.integrated_gradients import RULES, integrated_gradients, quadrature

from tolerances import assert_matrix_close

pytestmark = pytest.mark.float_sensitive  # float comparisons across kernels and orders


@pytest.fixture(scope="module")
def llama(tok, tiny_model):
    return tiny_model("llama", tokenizer=tok, seed=3)


@pytest.fixture(scope="module")
def request_ids(tok):
    prompt = tok("Translate the cat in French.", return_tensors="pt").input_ids[0]
    target = tok(" tac a", add_special_tokens=False, return_tensors="pt").input_ids[0]
    return prompt, target


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_inputs_embeds_equal_input_ids(tok, family, tiny_model):
    """Feeding get_input_embeddings()(ids) is what the model does itself (gemma's scaling included)."""
    model = tiny_model(family, tokenizer=tok, seed=0)
    ids = tok("Summarize the poem as a list.", return_tensors="pt").input_ids
    with torch.no_grad():
        by_ids = model(input_ids=ids).logits
        by_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    torch.testing.assert_close(by_embeds, by_ids, atol=0, rtol=0)  # the same kernels on the same inputs


def _slow_ig(model, prompt, target, base, alphas, weights, objective):
    """Reference: one forward and one plain .backward() per (path point, target token)."""
    embed = model.get_input_embeddings()
    with torch.no_grad():
        real, t_emb = embed(prompt), embed(target)
    m = prompt.numel()
    out = torch.zeros(m, target.numel(), dtype=torch.float64)
    for alpha, w in zip(alphas.tolist(), weights.tolist()):
        for n, tok_id in enumerate(target.tolist()):
            x = (base + alpha * (real - base)).clone().requires_grad_(True)
            logits = model(inputs_embeds=torch.cat([x, t_emb])[None]).logits[0]
            value = torch.log_softmax(logits[m - 1 + n], -1)[tok_id]
            if objective == "prob":
                value = value.exp()
            value.backward()
            out[:, n] += w * (x.grad * (real - base)).sum(-1).double()
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize(
    "objective,baseline,rule", [("logprob", "zero", "gauss_legendre_log"), ("prob", "ids", "trapezoid")]
)
def test_matches_slow_reference(llama, request_ids, objective, baseline, rule):
    prompt, target = request_ids
    if baseline == "ids":
        baseline = torch.full_like(prompt, 20)
        with torch.no_grad():
            base = llama.get_input_embeddings()(baseline)
    else:
        base = torch.zeros(prompt.numel(), llama.config.hidden_size)
    steps = 4
    res = integrated_gradients(
        llama, prompt, target, baseline=baseline, steps=steps, objective=objective, rule=rule, batch_size=2
    )
    alphas, weights = quadrature(steps, rule)
    ref = _slow_ig(llama, prompt, target, base, alphas, weights, objective)
    assert res.attributions.shape == (prompt.numel(), target.numel())
    assert_matrix_close(res.attributions, ref)  # batched VJPs against one backward per point and token


def test_batched_vjp_equals_loop(llama, request_ids):
    prompt, target = request_ids
    loop = integrated_gradients(llama, prompt, target, steps=6, vjp="loop", batch_size=4)
    batched = integrated_gradients(llama, prompt, target, steps=6, vjp="batched", batch_size=2)
    assert_matrix_close(batched.attributions, loop.attributions)  # the same sums in another order


def test_completeness_shrinks_with_steps(llama, request_ids):
    """Measured on this tiny llama (float32): ~0.5 at 8 steps, ~1e-5 at 64 (decade-panel Gauss-Legendre)."""
    prompt, target = request_ids
    coarse = integrated_gradients(llama, prompt, target, steps=8, batch_size=32)
    fine = integrated_gradients(llama, prompt, target, steps=64, batch_size=32)
    assert fine.completeness_rel_error_total < 1e-3  # stated tolerance: 0.1%
    assert coarse.completeness_rel_error_total > 10 * fine.completeness_rel_error_total
    # the end points are the model's real scores: f(e) is the plain target log-prob
    with torch.no_grad():
        logits = llama(input_ids=torch.cat([prompt, target])[None]).logits[0]
    m = prompt.numel()
    direct = torch.stack([torch.log_softmax(logits[m - 1 + n], -1)[t] for n, t in enumerate(target.tolist())])
    torch.testing.assert_close(fine.target_values, direct.double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(fine.completeness_sum, fine.completeness_delta, atol=1e-3, rtol=1e-3)


def test_plain_gauss_legendre_is_enough_off_the_zero_path(llama, request_ids):
    """A token baseline keeps the path away from the RMSNorm singularity; 16 plain nodes suffice there."""
    prompt, target = request_ids
    res = integrated_gradients(
        llama,
        prompt,
        target,
        baseline=torch.full_like(prompt, 20),
        steps=16,
        rule="gauss_legendre",
        objective="prob",
        batch_size=16,
    )
    assert res.completeness_rel_error_total < 1e-3
    assert res.baseline == "ids" and res.objective == "prob"
    d = res.to_dict()
    assert len(d["attributions"]) == prompt.numel() and len(d["attributions"][0]) == target.numel()
    assert isinstance(d["completeness_rel_error_total"], float)


def test_parameters_untouched(llama, request_ids):
    prompt, target = request_ids
    frozen = next(llama.parameters())
    frozen.requires_grad_(False)
    try:
        integrated_gradients(llama, prompt, target, steps=2)
        params = list(llama.parameters())
        assert not frozen.requires_grad
        assert all(p.requires_grad for p in params if p is not frozen)
        assert all(p.grad is None for p in params)
    finally:
        frozen.requires_grad_(True)


@pytest.mark.parametrize("rule", RULES)
def test_quadrature_rules(rule):
    alphas, weights = quadrature(16, rule)
    assert alphas.shape == weights.shape == (16,)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((alphas >= 0).all() and (alphas <= 1).all())
    # integral of 3 a^2 over [0, 1] is 1
    assert float((weights * 3 * alphas**2).sum()) == pytest.approx(1.0, abs=5e-3)


def test_log_panels_resolve_a_sharp_transition():
    """f(a) = a / sqrt(a^2 + 1e-8), an RMSNorm of a scaled vector: its change happens below a = 1e-3."""
    target = 1 / math.sqrt(1 + 1e-8)  # f(1) - f(0)
    for rule, resolves in (("gauss_legendre_log", True), ("gauss_legendre", False)):
        a, w = quadrature(32, rule)
        integral = float((w * 1e-8 / (a**2 + 1e-8) ** 1.5).sum())  # quadrature of f'(a)
        if resolves:
            assert integral == pytest.approx(target, rel=1e-3)
        else:
            assert abs(integral - target) > 0.1  # uniform nodes miss it


def test_bad_inputs(llama, request_ids):
    prompt, target = request_ids
    with pytest.raises(ValueError, match="unknown objective"):
        integrated_gradients(llama, prompt, target, objective="logit")
    with pytest.raises(ValueError, match="unknown baseline"):
        integrated_gradients(llama, prompt, target, baseline="mean")
    with pytest.raises(ValueError, match="one id per prompt token"):
        integrated_gradients(llama, prompt, target, baseline=prompt[:-1])
    with pytest.raises(ValueError, match="steps must be"):
        integrated_gradients(llama, prompt, target, steps=0)
    with pytest.raises(ValueError, match="unknown integration rule"):
        integrated_gradients(llama, prompt, target, rule="simpson")
    with pytest.raises(ValueError, match="prompt_ids must be a 1-D LongTensor"):
        integrated_gradients(llama, prompt.float(), target)
