"""Half precision: attribution in bf16/fp16 with float32 accumulation, the sampled float32 check, and the
float32 re-run of a request that gives NaN/inf; `in_float32` must give the model back bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lm_interp_plugin.interpret.passes import run_pass
from lm_interp_plugin.interpret.precision import float32_comparison
from lm_interp_plugin.interpret.settings import InterpSettings
from lm_interp_plugin.methods.attribution import gradient_x_input
from lm_interp_plugin.methods.importance import ImportanceParams, instruction_importance, quantise
from lm_interp_plugin.methods.model_state import in_float32

from tolerances import HALF_REL, LOGPROB_ATOL, assert_matrix_close

SETTINGS = {"attention": False, "ffn": False, "ablation": False}

pytestmark = pytest.mark.float_sensitive  # float comparisons across kernels and orders


@pytest.fixture()
def bf16_model(tiny_model):
    model = tiny_model("llama", seed=3)
    model.set_attn_implementation("eager")
    return model.to(torch.bfloat16)


def _pair(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 700, (14,), generator=g), torch.randint(5, 700, (5,), generator=g)


def _labels(n: int) -> list[str]:
    return ["instruction"] * 5 + ["content"] * (n - 5)


def _snapshot(model):
    return {name: (t.dtype, t.clone()) for name, t in [*model.named_parameters(), *model.named_buffers()]}


def test_in_float32_casts_and_restores_bit_identically(bf16_model):
    before = _snapshot(bf16_model)
    assert any(dtype == torch.bfloat16 for dtype, _ in before.values())
    with in_float32(bf16_model):
        assert all(p.dtype == torch.float32 for p in bf16_model.parameters())
    after = _snapshot(bf16_model)
    assert before.keys() == after.keys()
    for name, (dtype, value) in before.items():
        assert after[name][0] == dtype, name  # rotary inv_freq stays float32, weights go back to bf16
        assert torch.equal(after[name][1], value), name


def test_in_float32_restores_on_error(bf16_model):
    with pytest.raises(KeyError), in_float32(bf16_model):
        raise KeyError("boom")
    assert next(bf16_model.parameters()).dtype == torch.bfloat16


def test_bf16_attribution_accumulates_in_float32_and_is_close_to_float32(bf16_model):
    prompt, target = _pair()
    half = gradient_x_input(bf16_model, prompt, target, mode="reverse", chunk_size=2)
    assert half.raw.dtype == torch.float32 and half.target_logprobs.dtype == torch.float32
    with in_float32(bf16_model):
        full = gradient_x_input(bf16_model, prompt, target, mode="reverse", chunk_size=2)
    rel = float((half.raw - full.raw).norm() / full.raw.norm())
    assert 0 < rel < HALF_REL, rel  # bf16 has 8 significant bits: close, but not equal
    # forward mode in bf16 agrees with reverse mode in bf16 to the same order
    fwd = gradient_x_input(bf16_model, prompt, target, mode="forward", chunk_size=4)
    assert float((fwd.raw - full.raw).norm() / full.raw.norm()) < HALF_REL


def test_sampled_fp32_check_records_the_relative_error(bf16_model):
    prompt, target = _pair(1)
    labels = _labels(len(prompt))
    settings = InterpSettings(**SETTINGS)
    result = run_pass(bf16_model, prompt.tolist(), target.tolist(), labels, settings, check_fp32=True)
    check = result.extras["fp32_check"]
    with in_float32(bf16_model):
        full = gradient_x_input(bf16_model, prompt, target).raw.numpy()
    expected = float(np.linalg.norm(result.raw - full) / np.linalg.norm(full))
    assert check["dtype"] == "bfloat16"
    assert check["rel_error"] == pytest.approx(expected, rel=1e-5)
    params = ImportanceParams()
    mask = np.array([lab == "instruction" for lab in labels])
    assert check["instruction_importance_float32"] == pytest.approx(
        instruction_importance(quantise(full, L=params.L, eps=params.eps), mask, b=params.b, p=params.p)
    )
    # unchecked requests carry no check; float32 models are never checked
    assert "fp32_check" not in run_pass(bf16_model, prompt.tolist(), target.tolist(), labels, settings).extras
    model32 = bf16_model.float()
    assert (
        "fp32_check"
        not in run_pass(model32, prompt.tolist(), target.tolist(), labels, settings, check_fp32=True).extras
    )


def test_float32_comparison_against_hand_computation():
    full = np.array([[1.0, -2.0], [3.0, 0.5]])
    half = full + np.array([[0.1, 0.0], [0.0, -0.2]])
    out = float32_comparison(half, full, ["instruction", "content"], ImportanceParams(), "float16")
    assert out["rel_error"] == pytest.approx(np.sqrt(0.01 + 0.04) / np.sqrt(1 + 4 + 9 + 0.25))
    assert out["max_abs_error_rel"] == pytest.approx(0.2 / 3.0)


def test_nan_in_half_precision_reruns_the_request_in_float32(bf16_model):
    """An overflow that only happens in half precision (simulated by a hook that emits inf in bf16) must not
    zero the attribution: the request is re-run in float32 and its record says so."""
    layer = bf16_model.model.layers[1].mlp

    def overflow_in_half(module, args, output):
        return output * float("inf") if output.dtype == torch.bfloat16 else output

    prompt, target = _pair(2)
    labels = _labels(len(prompt))
    with in_float32(bf16_model):
        expected = gradient_x_input(bf16_model, prompt, target).raw.numpy()
        expected_logprobs = gradient_x_input(bf16_model, prompt, target).target_logprobs.numpy()
    handle = layer.register_forward_hook(overflow_in_half)
    try:
        result = run_pass(bf16_model, prompt.tolist(), target.tolist(), labels, InterpSettings(**SETTINGS))
    finally:
        handle.remove()
    assert any("re-run in float32" in note for note in result.notes), result.notes
    assert result.extras["precision"].startswith("float32")
    assert_matrix_close(result.raw, expected)
    np.testing.assert_allclose(result.target_logprobs, expected_logprobs, rtol=0, atol=LOGPROB_ATOL)
    assert np.isfinite(result.raw).all() and np.abs(result.raw).max() > 0
    assert next(bf16_model.parameters()).dtype == torch.bfloat16


def test_nan_in_float32_is_zeroed_with_a_note(tiny_model):
    model = tiny_model("llama", seed=3)
    handle = model.model.layers[1].mlp.register_forward_hook(lambda m, a, o: o * float("nan"))
    prompt, target = _pair(2)
    try:
        result = run_pass(
            model, prompt.tolist(), target.tolist(), _labels(len(prompt)), InterpSettings(**SETTINGS)
        )
    finally:
        handle.remove()
    assert "non-finite attribution values were set to 0" in result.notes
    assert "precision" not in result.extras
    assert np.isfinite(result.raw).all()


def test_api_reports_fp32_check(bf16_model, lm_tokenizer):
    from lm_interp_plugin import attribute

    prompt = "Translate the sentence into French. The cat sleeps."
    out = attribute(
        bf16_model,
        lm_tokenizer,
        prompt,
        " Le chat dort.",
        instruction="Translate the sentence",
        check_fp32=True,
        attention=False,
        ffn=False,
        ablation=False,
    )
    assert out.fp32_check is not None and out.fp32_check["rel_error"] < 0.1


def test_float16_does_not_underflow_with_a_large_vocabulary():
    """With a 32k vocabulary p(y) is ~3e-5, and its gradient underflows in float16 when differentiated
    directly
    (the reference loop in float16 is ~35% off). The engine differentiates log p and multiplies by p in
    float32, which keeps float16 within a fraction of a percent of float32 in both modes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lm_interp_plugin.methods.attribution import reference_gradient_x_input

    cfg = LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=32000,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval().to(torch.float16)
    g = torch.Generator().manual_seed(0)
    prompt, target = torch.randint(0, 32000, (24,), generator=g), torch.randint(0, 32000, (6,), generator=g)
    with in_float32(model):
        full = gradient_x_input(model, prompt, target).raw
    for mode in ("reverse", "forward"):
        half = gradient_x_input(model, prompt, target, mode=mode).raw
        assert float((half - full).norm() / full.norm()) < 0.02, mode
    direct = reference_gradient_x_input(model, prompt, target)  # d p / d e straight in float16
    assert float((direct - full).norm() / full.norm()) > 0.1  # the failure the engine avoids
