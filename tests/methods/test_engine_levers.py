"""The engine's speed levers give the same matrix: the LM-head shortcut (derivatives seeded / contracted at
the final hidden state) against differentiating through the head, in every tiny family and both modes."""

from __future__ import annotations

import contextlib

import pytest
import torch

from lm_interp_plugin.methods.attribution import gradient_x_input, reference_gradient_x_input
from lm_interp_plugin.methods.model_state import eager_attention
from lm_interp_plugin.testing.tiny import TINY_FAMILIES

from tolerances import assert_matrix_close

pytestmark = pytest.mark.float_sensitive  # float comparisons across kernels and orders


def _pair(prompt_len: int, target_len: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 300, (prompt_len,), generator=g), torch.randint(
        5, 300, (target_len,), generator=g
    )


@contextlib.contextmanager
def _head_calls(model):
    calls: list[int] = []
    handle = model.get_output_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_head_shortcut_gives_the_same_matrix(tok, family, mode, tiny_model):
    """Gemma-2 soft-caps its final logits (after the head module): the shortcut's one backward through the
    head includes it. Forward mode runs under eager attention, as the pass runs it."""
    model = tiny_model(family, tokenizer=tok, seed=3)
    prompt, target = _pair(9, 6, seed=4)
    context = eager_attention(model) if mode == "forward" else contextlib.nullcontext()
    with context:
        with _head_calls(model) as calls:
            fast = gradient_x_input(model, prompt, target, mode=mode, chunk_size=4)
        assert len(calls) == 1  # only the primal forward ran the head; no derivative pass went through it
        with _head_calls(model) as calls:
            slow = gradient_x_input(model, prompt, target, mode=mode, chunk_size=4, head_shortcut=False)
        assert len(calls) == (1 if mode == "reverse" else 1 + 3)  # forward: one vmapped call per chunk
        reference = reference_gradient_x_input(model, prompt, target)
    assert_matrix_close(fast.raw, slow.raw)
    assert_matrix_close(fast.raw, reference)
    torch.testing.assert_close(fast.target_logprobs, slow.target_logprobs)


def test_reverse_shortcut_seeds_hidden_sized_vectors(tok, monkeypatch, tiny_model):
    """The batched VJPs start at the final hidden state (``[chunk, 1, N, hidden]`` seeds), not at the
    log-probabilities through a ``[chunk, N, vocab]`` softmax."""
    model = tiny_model("llama", tokenizer=tok, seed=5)
    prompt, target = _pair(10, 7, seed=6)
    shapes = []
    original = torch.autograd.grad

    def spy(outputs, inputs, grad_outputs=None, **kwargs):
        if kwargs.get("is_grads_batched"):
            shapes.append(tuple(grad_outputs.shape))
        return original(outputs, inputs, grad_outputs=grad_outputs, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    gradient_x_input(model, prompt, target, mode="reverse", chunk_size=4)
    hidden = model.config.hidden_size
    assert shapes == [(4, 1, 7, hidden), (3, 1, 7, hidden)]
