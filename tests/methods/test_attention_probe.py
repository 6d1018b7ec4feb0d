"""The layer-by-layer instruction-attention probe equals the metrics computed from eager attention's full
probabilities (the pass's former path), in every tiny family, under the model's own attention implementation
and under eager; and `run_pass` no longer switches a reverse-mode pass to eager attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lm_interp_plugin import metric_names as names
from lm_interp_plugin.arch import get_adapter
from lm_interp_plugin.interpret.passes import attention_metrics, run_pass
from lm_interp_plugin.interpret.settings import InterpSettings
from lm_interp_plugin.methods.attention import instruction_attention, target_query_positions
from lm_interp_plugin.methods.attention_probe import InstructionAttentionProbe
from lm_interp_plugin.methods.attribution import gradient_x_input
from lm_interp_plugin.methods.model_state import eager_attention
from lm_interp_plugin.testing.tiny import TINY_FAMILIES

from tolerances import ATTENTION_ATOL, assert_matrix_close

# Probabilities from two attention kernels (SDPA's fused softmax vs eager's) differ by float32 rounding;
# the mass is a sum of at most `prompt_len` of them averaged over the target rows.
MASS_ATOL = ATTENTION_ATOL

pytestmark = pytest.mark.float_sensitive  # float comparisons across kernels and orders


def _inputs(prompt_len: int, target_len: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 300, (prompt_len + target_len,), generator=g)
    mask = torch.zeros(prompt_len, dtype=torch.bool)
    mask[2:9] = True
    return ids[:prompt_len], ids[prompt_len:], mask


def _eager_reference(model, sequence: torch.Tensor, mask, positions):
    with eager_attention(model), torch.no_grad():
        attentions = model(input_ids=sequence[None], output_attentions=True).attentions
    return instruction_attention(torch.stack([a[0] for a in attentions]), mask, positions)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_probe_equals_eager_probabilities(tok, family, tiny_model):
    """GQA (kv_heads=2 of 4 heads) in the Llama-like families, GPT-2's Conv1D, NeoX's interleaved qkv,
    Gemma-2's soft-capping (eager only), Qwen3's q/k norms."""
    model = tiny_model(family, tokenizer=tok, seed=1)
    prompt, target, mask = _inputs(20, 6)
    sequence = torch.cat([prompt, target[:-1]])
    positions = target_query_positions(len(prompt), len(target))
    reference = _eager_reference(model, sequence, mask, positions)
    own = model.config._attn_implementation
    probe = InstructionAttentionProbe(model, mask, positions)
    for implementation in dict.fromkeys((own, "eager")):
        model.set_attn_implementation(implementation)
        with probe.capture(), torch.no_grad():
            model(input_ids=sequence[None])
        assert model.config._attn_implementation == implementation  # restored
        got = probe.result()
        assert got.mass.shape == reference.mass.shape
        torch.testing.assert_close(got.mass, reference.mass, rtol=0, atol=MASS_ATOL)
        torch.testing.assert_close(
            got.lift, reference.lift, rtol=1e-5, atol=MASS_ATOL / reference.uniform_share
        )
    assert float(reference.mass.min()) > 0  # the comparison is not between zeros


def test_probe_respects_a_sliding_window(tok, tiny_model):
    """Mistral with a 6-token window on a 30-token sequence: the probe's rebuilt mask must match SDPA's."""
    model = tiny_model("mistral", tokenizer=tok, seed=2)
    model.config.sliding_window = 6
    prompt, target, mask = _inputs(24, 6, seed=3)
    sequence = torch.cat([prompt, target[:-1]])
    positions = target_query_positions(len(prompt), len(target))
    reference = _eager_reference(model, sequence, mask, positions)
    probe = InstructionAttentionProbe(model, mask, positions)
    with probe.capture(), torch.no_grad():
        model(input_ids=sequence[None])
    torch.testing.assert_close(probe.result().mass, reference.mass, rtol=0, atol=MASS_ATOL)
    # the instruction (tokens 2..8) is outside every target row's window: no mass at all
    assert float(reference.mass.abs().max()) == 0.0


def test_probe_inside_the_attribution_forward_with_grad(tok, tiny_model):
    """As the pass uses it: the capture wraps the primal forward of `gradient_x_input` (graph kept, SDPA),
    and the batched backward afterwards still gives the eager engine's matrix."""
    model = tiny_model("llama", tokenizer=tok, seed=4)
    prompt, target, mask = _inputs(18, 5, seed=5)
    positions = target_query_positions(len(prompt), len(target))
    probe = InstructionAttentionProbe(model, mask, positions)
    out = gradient_x_input(model, prompt, target, mode="reverse", capture=probe.capture)
    with eager_attention(model):
        eager = gradient_x_input(model, prompt, target, mode="reverse", output_attentions=True)
    reference = instruction_attention(eager.attentions, mask, positions)
    torch.testing.assert_close(probe.result().mass, reference.mass, rtol=0, atol=MASS_ATOL)
    assert_matrix_close(out.raw, eager.raw)
    assert model.config._attn_implementation == "sdpa"


def _implementations_seen(model):
    """Record the attention implementation the model is under at every forward of its first layer."""
    seen: list[str] = []
    layer = model.model.layers[0]
    handle = layer.register_forward_pre_hook(lambda *_: seen.append(model.config._attn_implementation))
    return seen, handle


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_run_pass_attention_equals_the_eager_path(tok, mode, tiny_model):
    model = tiny_model("llama", tokenizer=tok, seed=6)
    prompt, target, _ = _inputs(16, 5, seed=7)
    labels = ["special"] + ["instruction"] * 6 + ["content"] * 9
    settings = InterpSettings(ffn=False, ablation=False, mode=mode)
    get_adapter(model)  # the layout is found once per model (one two-token forward), before the pass
    seen, handle = _implementations_seen(model)
    try:
        result = run_pass(model, prompt.tolist(), target.tolist(), labels, settings)
    finally:
        handle.remove()
    # reverse: one primal forward, under the model's own SDPA (wrapped in place by the probe); forward: JVPs
    # under eager
    if mode == "reverse":
        assert seen == ["sdpa"]
    else:
        assert set(seen) == {"eager"}
    assert model.config._attn_implementation == "sdpa"
    with eager_attention(model):  # the former path: eager, every layer's probabilities
        eager = gradient_x_input(model, prompt, target, mode=mode, output_attentions=True)
    scalars, per_head = attention_metrics(eager.attentions, labels, len(prompt))
    for key in (names.INSTRUCTION_ATTENTION, names.INSTRUCTION_ATTENTION_LIFT):
        assert result.metrics[key] == pytest.approx(scalars[key], abs=1e-6)
        np.testing.assert_allclose(result.attention[key], per_head[key], rtol=0, atol=1e-5)
    assert_matrix_close(result.raw, eager.raw.numpy())


def test_probe_with_activation_checkpointing(tok, tiny_model):
    """Checkpointed layers are recomputed in the backward after the probe's forward: same metrics, same
    matrix."""
    model = tiny_model("qwen2", tokenizer=tok, seed=8)
    prompt, target, _ = _inputs(14, 4, seed=9)
    labels = ["special"] + ["instruction"] * 5 + ["content"] * 8
    plain = run_pass(
        model, prompt.tolist(), target.tolist(), labels, InterpSettings(ffn=False, ablation=False)
    )
    checkpointed = run_pass(
        model,
        prompt.tolist(),
        target.tolist(),
        labels,
        InterpSettings(ffn=False, ablation=False, checkpoint=True, chunk_size=2),
    )
    assert_matrix_close(checkpointed.raw, plain.raw)
    np.testing.assert_allclose(
        checkpointed.attention[names.INSTRUCTION_ATTENTION],
        plain.attention[names.INSTRUCTION_ATTENTION],
        atol=1e-7,
    )
    assert model.config._attn_implementation == "sdpa"


def test_keys_that_are_not_tokens_leave_the_layer_unmeasured():
    """DeepSeek-V4 appends compressed key/value entries to the keys: key i is no longer token i, so the probe
    names the layer as unmeasured instead of reading the first keys as the prompt's tokens."""
    from lm_interp_plugin.methods.attention_probe import AttentionProbeError
    from lm_interp_plugin.testing.families import build_family_model

    model = build_family_model("deepseek_v4", vocab_size=300, seed=0)
    prompt, target, mask = _inputs(20, 4)
    sequence = torch.cat([prompt, target[:-1]])
    probe = InstructionAttentionProbe(model, mask, target_query_positions(len(prompt), len(target)))
    with probe.capture(), torch.no_grad():
        model(input_ids=sequence[None])
    with pytest.raises(AttentionProbeError, match=r"reads \d+ keys for 23 tokens"):
        probe.result()


def test_no_decoder_layout_means_no_instruction_attention(tok, tiny_model, caplog):
    """A model whose decoder layers are not found (BLT's byte encoder, latent and decoder stacks; here a Llama
    whose config names another layer count): the probabilities its eager forward returns belong to no known
    layer, so instruction attention is left out (said once), never computed from them; attribution runs."""
    model = tiny_model("llama", tokenizer=tok, seed=6)
    model.config.num_hidden_layers += 7  # no ModuleList of that length: the detector finds no layout
    prompt, target, mask = _inputs(20, 4)
    labels = ["instruction" if m else "input" for m in mask.tolist()]
    settings = InterpSettings(mode="reverse", ablation=False, fp32_check=0)
    with caplog.at_level("WARNING"):
        out = run_pass(model, prompt.tolist(), target.tolist(), labels, settings)
    assert names.INSTRUCTION_IMPORTANCE in out.metrics
    assert not any("attention" in key for key in out.metrics)
    assert "cannot be assigned to its decoder layers" in caplog.text
