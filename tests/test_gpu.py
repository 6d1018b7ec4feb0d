"""CUDA checks, run on a GPU machine (`pytest -m gpu`); skipped elsewhere. No timing is asserted."""

from __future__ import annotations

import pytest
import torch

from lm_interp_plugin.interpret.passes import run_pass
from lm_interp_plugin.interpret.settings import InterpSettings
from lm_interp_plugin.methods.attribution import gradient_x_input, reference_gradient_x_input
from lm_interp_plugin.methods.model_state import in_float32

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _pair(p=40, n=12):
    g = torch.Generator().manual_seed(0)
    return torch.randint(5, 700, (p,), generator=g), torch.randint(5, 700, (n,), generator=g)


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_cuda_float32_matches_cpu_reference(mode, tiny_model):
    model = tiny_model("llama", seed=5)
    model.set_attn_implementation("eager")
    prompt, target = _pair()
    expected = reference_gradient_x_input(model, prompt, target)
    out = gradient_x_input(model.cuda(), prompt, target, mode=mode)
    torch.testing.assert_close(out.raw, expected, rtol=1e-3, atol=1e-7)


def test_cuda_bf16_with_float32_check(tiny_model):
    model = tiny_model("llama", seed=5)
    model.set_attn_implementation("eager")
    model = model.to("cuda", torch.bfloat16)
    prompt, target = _pair()
    labels = ["instruction"] * 10 + ["content"] * (len(prompt) - 10)
    result = run_pass(
        model,
        prompt.tolist(),
        target.tolist(),
        labels,
        InterpSettings(ffn=False, ablation=False),
        check_fp32=True,
    )
    assert result.extras["fp32_check"]["rel_error"] < 0.1
    assert next(model.parameters()).dtype == torch.bfloat16
    with in_float32(model):
        assert next(model.parameters()).dtype == torch.float32


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_sharded_model_matches_one_device(tiny_model):
    """device_map sharding (what parallelize=True does): same matrix and attentions as on one device."""
    from accelerate import dispatch_model

    model = tiny_model("llama", seed=5)
    model.set_attn_implementation("eager")
    prompt, target = _pair()
    single = gradient_x_input(model.cuda(), prompt, target, output_attentions=True)
    n = model.config.num_hidden_layers
    device_map = {
        "model.embed_tokens": 0,
        "model.norm": 1,
        "model.rotary_emb": 0,
        "lm_head": 1,
        **{f"model.layers.{i}": 0 if i < n // 2 else 1 for i in range(n)},
    }
    sharded = dispatch_model(model.cpu(), device_map=device_map)
    for mode in ("reverse", "forward"):
        out = gradient_x_input(sharded, prompt, target, mode=mode, output_attentions=True)
        torch.testing.assert_close(out.raw, single.raw, rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(out.attentions, single.attentions, rtol=1e-4, atol=1e-6)


def test_cuda_attention_probe_under_sdpa_equals_eager(tiny_model):
    """The pass's layer-by-layer instruction attention under CUDA SDPA equals eager's full probabilities."""
    from lm_interp_plugin.methods.attention import instruction_attention, target_query_positions
    from lm_interp_plugin.methods.attention_probe import InstructionAttentionProbe
    from lm_interp_plugin.methods.model_state import eager_attention

    model = tiny_model("llama", seed=5).cuda()
    model.set_attn_implementation("sdpa")
    prompt, target = _pair()
    mask = torch.zeros(len(prompt), dtype=torch.bool)
    mask[1:11] = True
    positions = target_query_positions(len(prompt), len(target))
    probe = InstructionAttentionProbe(model, mask, positions)
    out = gradient_x_input(model, prompt, target, capture=probe.capture)
    with eager_attention(model):
        eager = gradient_x_input(model, prompt, target, output_attentions=True)
    expected = instruction_attention(eager.attentions, mask, positions)
    torch.testing.assert_close(probe.result().mass, expected.mass, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.raw, eager.raw, rtol=1e-3, atol=1e-6)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_cuda_bf16_head_shortcut_is_as_close_to_float32(mode, tiny_model):
    """The LM-head shortcut in bf16 is as close to float32 as the route through the head (no new error)."""
    from lm_interp_plugin.methods.model_state import eager_attention

    model = tiny_model("llama", seed=5).to("cuda", torch.bfloat16)
    prompt, target = _pair()
    context = eager_attention(model) if mode == "forward" else torch.enable_grad()
    with context:
        with in_float32(model):
            full = gradient_x_input(model, prompt, target, mode=mode).raw
        fast = gradient_x_input(model, prompt, target, mode=mode).raw
        slow = gradient_x_input(model, prompt, target, mode=mode, head_shortcut=False).raw
    err_fast = float((fast - full).norm() / full.norm())
    err_slow = float((slow - full).norm() / full.norm())
    assert err_fast < 0.1 and err_fast <= 1.5 * err_slow + 1e-3, (err_fast, err_slow)
