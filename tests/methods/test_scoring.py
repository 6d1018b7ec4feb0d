"""The one target scorer (`methods/scoring.py`) behind attribution, ablation and integrated gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lm_interp_plugin.methods.ablation import target_logprobs
from lm_interp_plugin.methods.attribution import gradient_x_input
from lm_interp_plugin.methods.integrated_gradients import integrated_gradients
from lm_interp_plugin.methods.model_state import eager_attention, in_float32
from lm_interp_plugin.methods.scoring import (
    EmbeddingSwapError,
    derivative_scale,
    embedding_output,
    last_positions_logprobs,
    padded_logprobs,
    token_logprobs,
)

from tolerances import LOGPROB_ATOL, assert_matrix_close, rounding_bound

pytestmark = pytest.mark.float_sensitive  # float comparisons across kernels and orders


def test_token_logprobs_against_float64():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 40, generator=g) * 4
    ids = torch.randint(0, 40, (5,), generator=g)
    got = token_logprobs(logits.to(torch.bfloat16), ids)
    assert got.dtype == torch.float32 and got.shape == (3, 5)
    expected = (
        logits.to(torch.bfloat16).double().log_softmax(-1).gather(-1, ids.expand(3, 5)[..., None])[..., 0]
    )
    # float32 log-softmax over 40 logits against float64: the logsumexp's size times its rounding
    atol = rounding_bound(1.0, 40) * float(expected.abs().max())
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=atol)
    scale = derivative_scale(got, "prob")
    torch.testing.assert_close(scale, got.exp())
    assert torch.equal(derivative_scale(got, "logprob"), torch.ones_like(got))


class _NoLogitsToKeep(nn.Module):
    """The same model behind a forward that does not know ``logits_to_keep`` (every position's logits)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = model.config

    def forward(self, input_ids=None, attention_mask=None, use_cache=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


def test_padded_logprobs_keeps_only_target_positions_and_equals_single_runs(tiny_model):
    model = tiny_model("llama", seed=1)
    g = torch.Generator().manual_seed(1)
    requests = [
        (torch.randint(5, 700, (m,), generator=g), torch.randint(5, 700, (n,), generator=g))
        for m, n in ((9, 3), (4, 5), (12, 1))
    ]
    with torch.no_grad():
        kept = padded_logprobs(model, requests, fill=2, device=torch.device("cpu"))
        full = padded_logprobs(_NoLogitsToKeep(model), requests, fill=2, device=torch.device("cpu"))
        singles = [padded_logprobs(model, [r], fill=2, device=torch.device("cpu"))[0] for r in requests]
    for a, b, c, (_, target) in zip(kept, full, singles, requests):
        assert a.shape == target.shape
        torch.testing.assert_close(a, b, rtol=0, atol=LOGPROB_ATOL)
        torch.testing.assert_close(a, c, rtol=0, atol=LOGPROB_ATOL)


def test_three_users_score_alike(tiny_model):
    """Attribution's, ablation's and integrated gradients' log p of the same pair agree."""
    model = tiny_model("llama", seed=2)
    g = torch.Generator().manual_seed(2)
    prompt, target = torch.randint(5, 700, (11,), generator=g), torch.randint(5, 700, (4,), generator=g)
    engine = gradient_x_input(model, prompt, target).target_logprobs
    ablation = target_logprobs(model, [(prompt, target)])[0]
    ig = integrated_gradients(model, prompt, target, steps=2, objective="logprob").target_values.float()
    torch.testing.assert_close(ablation, engine, rtol=0, atol=LOGPROB_ATOL)
    torch.testing.assert_close(ig, engine, rtol=0, atol=LOGPROB_ATOL)


def test_integrated_gradients_prob_objective_survives_float16():
    """IG's prob path now differentiates log p and scales by p in float32, as the engine does: in float16
    with a 32k vocabulary (p ~ 3e-5) it stays within 0.3% of float32 (differentiating p directly, as IG did
    before, was 33% off on this model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=32000,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval().to(torch.float16)
    g = torch.Generator().manual_seed(0)
    prompt, target = torch.randint(0, 32000, (12,), generator=g), torch.randint(0, 32000, (3,), generator=g)
    half = integrated_gradients(model, prompt, target, steps=8, objective="prob").attributions
    with in_float32(model):
        full = integrated_gradients(model, prompt, target, steps=8, objective="prob").attributions
    assert float(full.abs().max()) > 0
    assert float((half - full).norm() / full.norm()) < 0.05


def _inputs_embeds_matrix(model, prompt: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The prob-objective gradient x input matrix through ``inputs_embeds`` (no ids), one backward per
    target: the path every family took before the embedding swap."""
    ids = torch.cat([prompt, target[:-1]])[None]
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    leaf = embeds[:, : len(prompt)].clone().requires_grad_(True)
    logp, _ = last_positions_logprobs(model, torch.cat([leaf, embeds[:, len(prompt) :]], 1), target[None])
    columns = []
    for n in range(len(target)):
        (grad,) = torch.autograd.grad(logp[0, n].exp(), leaf, retain_graph=True)
        columns.append((grad * leaf.detach()).sum(-1)[0])
    return torch.stack(columns, 1)


def test_input_ids_with_swapped_embeddings_equal_the_inputs_embeds_path(tiny_model):
    """The engine feeds input_ids and swaps the embedding module's output for its leaf; on a model whose
    forward does nothing else with the ids the matrix is the inputs_embeds path's, up to rounding (the
    tolerance: two float32 matrices of a tiny model, `tolerances.MATRIX_ATOL_SCALE`)."""
    model = tiny_model("llama", seed=3)
    g = torch.Generator().manual_seed(3)
    prompt, target = torch.randint(5, 700, (10,), generator=g), torch.randint(5, 700, (3,), generator=g)
    expected = _inputs_embeds_matrix(model, prompt, target)
    assert_matrix_close(gradient_x_input(model, prompt, target, mode="reverse").raw, expected.detach())
    with eager_attention(model):  # forward-mode derivatives need eager attention
        got = gradient_x_input(model, prompt, target, mode="forward").raw
    assert_matrix_close(got, expected.detach())


def _embedding_holder():
    """An embedding, a model-like holder whose input embeddings it is, ids [[4, 5]] and seeded rows."""
    embed = nn.Embedding(10, 3)
    holder = nn.Module()
    holder.get_input_embeddings = lambda: embed
    mine = torch.randn(1, 2, 3, generator=torch.Generator().manual_seed(0))
    return embed, holder, torch.tensor([[4, 5]]), mine


def test_embedding_output_swaps_only_the_call_on_the_ids():
    """Only the first lookup whose ids end with the input ids is swapped (a prepended prefix keeps its
    rows); other lookups, a second one included, are the embedding's own; none at all raises."""
    embed, holder, ids, mine = _embedding_holder()
    with torch.no_grad(), embedding_output(holder, ids, mine):
        other = embed(torch.tensor([[1, 2]]))
        prefixed = embed(torch.tensor([[9, 4, 5]], dtype=torch.int32))
        again = embed(ids)
    assert torch.equal(other, embed.weight[[1, 2]][None].detach())
    assert torch.equal(prefixed[0, 0], embed.weight[9].detach()) and torch.equal(prefixed[:, 1:], mine)
    assert torch.equal(again, embed.weight[[4, 5]][None].detach())
    with pytest.raises(EmbeddingSwapError, match="never called its input embeddings"):
        with embedding_output(holder, ids, mine):
            embed(torch.tensor([[4, 6]]))


def test_embedding_output_swaps_ids_padded_after_them():
    """A forward that pads the ids after them (Reformer, to a multiple of its chunk length) gets the
    caller's rows for the ids and the embedding's own rows for the padding."""
    embed, holder, ids, mine = _embedding_holder()
    with torch.no_grad(), embedding_output(holder, ids, mine):
        padded = embed(torch.tensor([[4, 5, 0, 0]]))
    assert torch.equal(padded[:, :2], mine)
    assert torch.equal(padded[0, 2:], embed.weight[[0, 0]].detach())
