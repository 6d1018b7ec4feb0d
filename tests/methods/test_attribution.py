"""The batched attribution engine against an independent per-token computation."""

from __future__ import annotations

import pytest
import torch

from lm_interp_plugin.methods.attribution import (
    AttributionError,
    choose_mode,
    gradient_x_input,
    reference_gradient_x_input,
)
from lm_interp_plugin.methods.model_state import frozen_parameters

from tolerances import assert_matrix_close

pytestmark = pytest.mark.float_sensitive  # float comparisons across kernels and orders


def independent_column(model, prompt_ids, target_ids, n, objective):
    """I[:, n] from scratch: a fresh forward on input_ids-equivalent embeddings and one plain backward."""
    embeds = model.get_input_embeddings()(torch.cat([prompt_ids, target_ids[:-1]])[None]).detach()
    leaf = embeds[:, : len(prompt_ids)].clone().requires_grad_(True)
    full = torch.cat([leaf, embeds[:, len(prompt_ids) :]], dim=1)
    logits = model(inputs_embeds=full).logits[0, len(prompt_ids) - 1 + n].float()
    logp = logits.log_softmax(-1)[target_ids[n]]
    score = logp.exp() if objective == "prob" else logp
    (grad,) = torch.autograd.grad(score, leaf)
    return (grad * leaf).sum(-1)[0].detach()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def family_model(request, tiny_model):
    m = tiny_model(request.param, seed=1)
    m.set_attn_implementation("eager")
    return m


@pytest.fixture(scope="module")
def model(tiny_model):
    m = tiny_model("llama", seed=1)
    m.set_attn_implementation("eager")
    return m


@pytest.mark.parametrize(("mode", "objective"), [("reverse", "prob"), ("forward", "logprob")])
def test_engine_matches_per_token_backward(family_model, mode, objective):
    model = family_model
    torch.manual_seed(0)
    prompt, target = torch.randint(5, 700, (11,)), torch.randint(5, 700, (6,))
    out = gradient_x_input(model, prompt, target, objective=objective, mode=mode, chunk_size=4)
    expected = torch.stack([independent_column(model, prompt, target, n, objective) for n in range(6)], dim=1)
    assert out.raw.shape == (11, 6)
    assert out.mode == mode
    assert_matrix_close(out.raw, expected.float())
    assert out.raw.abs().max() > 0


def test_chunking_does_not_change_the_result(model):
    prompt, target = torch.randint(5, 700, (9,)), torch.randint(5, 700, (7,))
    whole = gradient_x_input(model, prompt, target, mode="reverse", chunk_size=64).raw
    for chunk in (1, 3):
        torch.testing.assert_close(
            gradient_x_input(model, prompt, target, mode="reverse", chunk_size=chunk).raw, whole
        )
        assert_matrix_close(
            gradient_x_input(model, prompt, target, mode="forward", chunk_size=chunk).raw, whole
        )


def test_reference_loop_agrees_and_logprobs_are_the_models(model):
    prompt, target = torch.randint(5, 700, (8,)), torch.randint(5, 700, (5,))
    out = gradient_x_input(model, prompt, target)
    assert_matrix_close(out.raw, reference_gradient_x_input(model, prompt, target))
    with torch.no_grad():
        logits = model(torch.cat([prompt, target])[None]).logits[0].log_softmax(-1)
    expected = logits[len(prompt) - 1 : -1].gather(-1, target[:, None])[:, 0]
    torch.testing.assert_close(out.target_logprobs, expected, rtol=1e-5, atol=1e-5)


def test_attentions_come_from_the_primal_forward(model):
    prompt, target = torch.randint(5, 700, (7,)), torch.randint(5, 700, (4,))
    for mode in ("reverse", "forward"):
        out = gradient_x_input(model, prompt, target, mode=mode, output_attentions=True)
        layers = model.config.num_hidden_layers
        assert out.attentions.shape[:2] == (layers, model.config.num_attention_heads)
        assert out.attentions.shape[-1] == 7 + 4 - 1
        torch.testing.assert_close(out.attentions.sum(-1), torch.ones(out.attentions.shape[:-1]))


def test_no_parameter_gradients_and_flags_restored(model):
    prompt, target = torch.randint(5, 700, (6,)), torch.randint(5, 700, (3,))
    gradient_x_input(model, prompt, target)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(RuntimeError), frozen_parameters(model):
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert all(p.requires_grad for p in model.parameters())


def test_mode_choice_and_errors(model):
    assert choose_mode(100, 5) == "reverse"
    assert choose_mode(5, 100) == "forward"
    assert choose_mode(5, 100, "reverse") == "reverse"
    with pytest.raises(AttributionError, match="unknown attribution mode"):
        choose_mode(5, 5, "sideways")
    with pytest.raises(AttributionError, match="objective"):
        gradient_x_input(model, torch.tensor([5, 6]), torch.tensor([7]), objective="loss")
    with pytest.raises(AttributionError, match="prompt is empty"):
        gradient_x_input(model, torch.tensor([], dtype=torch.long), torch.tensor([7]))
    empty = gradient_x_input(model, torch.tensor([5, 6]), torch.tensor([], dtype=torch.long))
    assert empty.raw.shape == (2, 0)


def test_forward_mode_under_sdpa_gives_a_clear_error(tiny_model):
    m = tiny_model("llama")
    m.set_attn_implementation("sdpa")
    with pytest.raises(AttributionError, match="eager"):
        gradient_x_input(m, torch.randint(5, 700, (4,)), torch.randint(5, 700, (6,)), mode="forward")
