"""Bounded memory: the chunk from a memory budget, halving on out-of-memory, activation checkpointing."""

from __future__ import annotations

import logging

import pytest
import torch

from lm_interp_plugin.interpret.settings import InterpSettings, parse_bytes
from lm_interp_plugin.methods import attribution as attr
from lm_interp_plugin.methods.attribution import (
    chunk_for_budget,
    default_chunk_size,
    gradient_x_input,
    row_bytes,
)
from lm_interp_plugin.methods.model_state import ModelStateError, activation_checkpointing

from tolerances import ATTENTION_ATOL, assert_matrix_close

pytestmark = pytest.mark.float_sensitive  # float comparisons across kernels and orders


@pytest.fixture(scope="module")
def model(tiny_model):
    m = tiny_model("llama", seed=4)
    m.set_attn_implementation("eager")
    return m


def _pair(p: int = 12, n: int = 7):
    g = torch.Generator().manual_seed(p * 31 + n)
    return torch.randint(5, 700, (p,), generator=g), torch.randint(5, 700, (n,), generator=g)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8GB", 8 * 10**9),
        ("512MiB", 512 * 2**20),
        ("1.5gb", 1_500_000_000),
        ("2000", 2000),
        (" 3 KiB ", 3072),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["8 bananas", "GB", "-1GB", "0"])
def test_bad_memory_budget_names_the_argument(bad):
    with pytest.raises(ValueError, match="interp_memory_budget"):
        InterpSettings.from_kwargs({"interp_memory_budget": bad})


def test_memory_budget_model_arg():
    settings = InterpSettings.from_kwargs({"interp_memory_budget": "1GiB", "interp_checkpoint": "true"})
    assert settings.memory_budget_bytes == 2**30 and settings.checkpoint is True


def test_row_estimate_grows_with_sequence_and_targets(model):
    assert row_bytes(model, 64, 8) < row_bytes(model, 128, 8) < row_bytes(model, 128, 64)
    # the attention term is quadratic in the sequence
    assert row_bytes(model, 2048, 1) > 3.5 * row_bytes(model, 1024, 1) / 2


def test_chunk_follows_the_budget(model):
    one = row_bytes(model, 100, 10)
    assert chunk_for_budget(model, 100, 10, 5 * one) == 5
    assert chunk_for_budget(model, 100, 10, one // 2) == 1  # never zero
    assert chunk_for_budget(model, 100, 10, 10**15) == attr.MAX_CHUNK
    assert default_chunk_size(model, 100, 10, memory_budget=3 * one) == 3
    assert default_chunk_size(model, 100, 10) == attr.CPU_CHUNK  # CPU default without a budget


def test_memory_budget_sets_the_chunk_and_keeps_the_result(model, monkeypatch):
    prompt, target = _pair(10, 9)
    reference = gradient_x_input(model, prompt, target, mode="reverse", chunk_size=64).raw
    widths = []
    original = torch.autograd.grad

    def spy(*args, **kwargs):
        widths.append(kwargs["grad_outputs"].shape[0] if kwargs.get("is_grads_batched") else 1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    budget = 2 * row_bytes(model, 18, 9)
    out = gradient_x_input(model, prompt, target, mode="reverse", memory_budget=budget)
    assert widths == [2, 2, 2, 2, 1]  # the last, single target is a plain backward
    assert_matrix_close(out.raw, reference)


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_out_of_memory_halves_the_chunk_and_retries(model, monkeypatch, caplog, mode):
    """A chunk wider than 2 'runs out of memory': the engine must halve it, retry and give the same matrix."""
    prompt, target = _pair(9, 9)
    reference = gradient_x_input(model, prompt, target, mode=mode, chunk_size=64).raw
    original = attr._chunked

    def tight(run_chunk, total, chunk, what):
        def limited(start, stop):
            if stop - start > 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            return run_chunk(start, stop)

        return original(limited, total, chunk, what)

    monkeypatch.setattr(attr, "_chunked", tight)
    with caplog.at_level(logging.WARNING, logger=attr.__name__):
        out = gradient_x_input(model, prompt, target, mode=mode, chunk_size=8)
    assert_matrix_close(out.raw, reference)
    assert "out of memory with 8" in caplog.text and "retrying with 4" in caplog.text


def test_out_of_memory_at_chunk_one_and_other_errors_propagate():
    def always_oom(start, stop):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        attr._chunked(always_oom, 4, 4, "rows")

    def broken(start, stop):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        attr._chunked(broken, 4, 4, "rows")


def test_activation_checkpointing_recomputes_layers_and_keeps_the_result(model):
    prompt, target = _pair(15, 6)
    plain = gradient_x_input(model, prompt, target, mode="reverse", chunk_size=2, output_attentions=True)
    calls = []
    layer = model.model.layers[0]
    handle = layer.mlp.register_forward_pre_hook(lambda m, a: calls.append(1))  # runs inside layer.forward
    try:
        out = gradient_x_input(
            model, prompt, target, mode="reverse", chunk_size=2, checkpoint=True, output_attentions=True
        )
    finally:
        handle.remove()
    assert_matrix_close(out.raw, plain.raw)
    torch.testing.assert_close(out.attentions, plain.attentions, rtol=0, atol=ATTENTION_ATOL)
    # one primal forward + one recomputation per batched backward (3 chunks of 2 targets)
    assert len(calls) == 1 + 3
    assert "forward" not in layer.__dict__  # the wrapper is gone


def test_activation_checkpointing_restores_on_error(model):
    layers = list(model.model.layers)
    with pytest.raises(ValueError), activation_checkpointing(model) as n:
        assert n == len(layers)
        assert all("forward" in layer.__dict__ for layer in layers)
        raise ValueError("boom")
    assert not any("forward" in layer.__dict__ for layer in layers)


def test_activation_checkpointing_needs_decoder_layers():
    with (
        pytest.raises(ModelStateError, match="interp_checkpoint"),
        activation_checkpointing(torch.nn.Linear(2, 2)),
    ):
        pass


def test_cpu_chunk_shrinks_for_long_prompts_only(lm_tokenizer):
    """On a CPU: 8 for ordinary prompts (measured best), fewer when a row's layer working set is large."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=256,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=683,
        vocab_size=32000,
    )
    model = LlamaForCausalLM(cfg)
    assert default_chunk_size(model, 128 + 31, 32) == attr.CPU_CHUNK
    assert default_chunk_size(model, 159, 4000) == attr.CPU_CHUNK  # the vocabulary term does not count on CPU
    assert default_chunk_size(model, 2048 + 31, 32) == 1
    assert default_chunk_size(model, 1024 + 31, 32) == 1
    assert 1 < default_chunk_size(model, 512 + 31, 32) < attr.CPU_CHUNK
