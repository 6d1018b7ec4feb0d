"""The structural detector on representative families beyond the ten tiny ones: a hybrid (Qwen3-Next), an SSM
(Mamba), MoE experts in both orientations (Mixtral, GPT-OSS), Gemma 3's sliding window, GPT-OSS's attention
sinks, Llama 4's chunked attention, families found by model class (EXAONE builds LlamaForCausalLM), and the
fused layouts `FUSED_PER_HEAD` lists. Every model is a tiny random one from the family's own config
(`testing.families`); the every-family version is tests/test_family_sweep.py (marked ``sweep``)."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch

from lm_interp_plugin import metric_names as names
from lm_interp_plugin.arch import (
    FUSED_PER_HEAD,
    UnsupportedArchitectureError,
    check_attributable,
    get_adapter,
)
from lm_interp_plugin.interpret.passes import run_pass
from lm_interp_plugin.interpret.settings import InterpSettings
from lm_interp_plugin.methods.attention_probe import _SAID
from lm_interp_plugin.testing.families import build_family_model

from sweep_check import PROMPT_LEN, _inputs, _mass_tolerance, check_probe

VOCAB = 300


@contextlib.contextmanager
def _sinks_through_the_interface(model):
    """GPT-OSS runs eager on a CPU (SDPA cannot apply sinks), where the probe reads the module's own
    probabilities. Its sink-aware kernels (flash with sinks, flex) are GPU-only; this registers GPT-OSS's
    eager function under another name, so the probe's recomputation from q, k and ``s_aux`` is measured."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    AttentionInterface.register("lm_interp_test_sinks", eager_attention_forward)
    AttentionMaskInterface.register("lm_interp_test_sinks", ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    old = model.config._attn_implementation
    model.config._attn_implementation = "lm_interp_test_sinks"
    try:
        yield
    finally:
        model.config._attn_implementation = old


def _gpt_oss(sink_value: float | None):
    model = build_family_model("gpt_oss", VOCAB)
    with torch.no_grad():
        for layer in model.model.layers:  # sinks as large as real ones, so that ignoring them would show
            if sink_value is None:
                layer.self_attn.sinks.normal_(0.0, 2.0, generator=torch.Generator().manual_seed(1))
            else:
                layer.self_attn.sinks.fill_(sink_value)
    return model


@pytest.mark.parametrize("family", ["gemma3_text", "gpt_oss", "qwen3_next", "llama4_text", "mixtral"])
def test_probe_equals_eager_past_windows_chunks_and_sinks(family):
    """The prompt (20 tokens) is longer than the tiny models' sliding window and attention chunk (8)."""
    model = _gpt_oss(None) if family == "gpt_oss" else build_family_model(family, VOCAB)
    prompt, target, labels = _inputs(VOCAB)
    with _sinks_through_the_interface(model) if family == "gpt_oss" else contextlib.nullcontext():
        ok, why = check_probe(model, get_adapter(model), prompt, target, labels)
    assert ok, why


def test_ignoring_the_sinks_would_be_caught():
    """The check can fail: with the sink logit dropped from the recomputation the mass moves far beyond the
    tolerance."""
    from lm_interp_plugin.methods import attention_probe

    model = _gpt_oss(3.0)
    prompt, target, labels = _inputs(VOCAB)
    original = attention_probe.InstructionAttentionProbe._from_queries

    def without_sinks(self, layer, query, key, mask, kwargs):
        return original(self, layer, query, key, mask, {k: v for k, v in kwargs.items() if k != "s_aux"})

    attention_probe.InstructionAttentionProbe._from_queries = without_sinks
    try:
        with _sinks_through_the_interface(model):
            ok, why = check_probe(model, get_adapter(model), prompt, target, labels)
    finally:
        attention_probe.InstructionAttentionProbe._from_queries = original
    assert not ok and "differs from eager" in why


def test_hybrid_rows_are_the_softmax_layers_labelled_with_their_model_index():
    model = build_family_model("qwen3_next", VOCAB)
    adapter = get_adapter(model)
    assert adapter.attention_layers == [1, 3]
    assert set(adapter.linear_layers().values()) == {"Qwen3NextGatedDeltaNet"}
    prompt, target, labels = _inputs(VOCAB)
    settings = InterpSettings(mode="reverse", ablation=False, ffn=False, fp32_check=0)
    out = run_pass(model, prompt.tolist(), target.tolist(), labels, settings)
    assert out.attention["layers"] == [1, 3]
    assert len(out.attention[names.INSTRUCTION_ATTENTION]) == 2
    # the capture vocabulary's `attn_out` is one entry per attention layer, the same tensors the modules give
    from lm_interp_plugin.interpret.capture import capture

    captured: dict = {}
    mine = []
    handle = adapter.attention_module(3).register_forward_hook(lambda _m, _a, out: mine.append(out[0]))
    with torch.no_grad(), capture(model, ["attn_out", "resid_post"], 2, captured):
        model(input_ids=prompt[None])
    handle.remove()
    assert len(captured["attn_out"]) == 2 and len(captured["resid_post"]) == adapter.num_layers
    torch.testing.assert_close(captured["attn_out"][1], mine[0][:, -2:], rtol=0, atol=0)


def test_hybrid_ffn_rows_are_the_ffn_layers_labelled_with_their_model_index():
    """Nemotron-H's layers are each one block (mixer, attention, MLP or MoE): FFN concepts cover the layers
    with an FFN, each row labelled with its model layer index; Zamba's FFN writes its shared block's own
    stream (mapped by ``linear`` before the residual), so its concepts are left out with that reason."""
    from lm_interp_plugin.interpret.ffn_probe import FFNProbe
    from lm_interp_plugin.methods.ffn import ffn_pca

    model = build_family_model("nemotron_h", VOCAB)
    adapter = get_adapter(model)
    assert adapter.ffn_missing() is None and adapter.ffn_layers == [1, 3]
    comps = [ffn_pca(adapter.down_proj_weight(i).float(), 3) for i in adapter.ffn_layers]
    labels = [[type("L", (), {"concept": "other"})() for _ in range(3)] for _ in comps]
    probe = FFNProbe.from_parts(model, comps, labels)
    prompt, target, labels_ = _inputs(VOCAB)
    settings = InterpSettings(mode="reverse", ablation=False, fp32_check=0)
    out = run_pass(model, prompt.tolist(), target.tolist(), labels_, settings, ffn_probe=probe)
    assert out.ffn["layers"] == [1, 3] and len(out.ffn["component_distribution"]) == 2
    zamba = get_adapter(build_family_model("zamba", VOCAB))
    assert zamba.ffn_layers == [] and "mapped by 'linear' before the residual" in zamba.ffn_missing()


def test_attention_free_model_says_once_and_keeps_attribution(caplog):
    model = build_family_model("mamba", VOCAB)
    prompt, target, labels = _inputs(VOCAB)
    settings = InterpSettings(mode="reverse", ablation=False, ffn=False, fp32_check=0)
    _SAID.clear()
    with caplog.at_level(logging.WARNING):
        outs = [run_pass(model, prompt.tolist(), target.tolist(), labels, settings) for _ in range(2)]
    said = [r.getMessage() for r in caplog.records if "instruction attention left out" in r.getMessage()]
    assert len(said) == 1 and "does not apply" in said[0]
    for out in outs:
        assert names.INSTRUCTION_IMPORTANCE in out.metrics
        assert names.INSTRUCTION_ATTENTION not in out.metrics


@pytest.mark.parametrize("family", ["mixtral", "gpt_oss"])
def test_moe_value_vectors_are_each_experts_down_projection(family):
    """Mixtral stores experts ``[E, d_model, d_ff]``, GPT-OSS ``[E, d_ff, d_model]``: either way the value
    vector j of expert e is what that expert writes for a unit activation of its neuron j."""
    model = build_family_model(family, VOCAB)
    adapter = get_adapter(model)
    experts = model.model.layers[0].mlp.experts
    W = adapter.down_proj_weight(0)
    n_experts, d = experts.down_proj.shape[0], adapter.hidden_size
    d_ff = W.shape[1] // n_experts
    assert W.shape == (d, n_experts * d_ff)
    for e in (0, n_experts - 1):
        unit = torch.eye(d_ff)
        if family == "mixtral":  # F.linear(act, down_proj[e])
            written = torch.nn.functional.linear(unit, experts.down_proj[e])
        else:  # act @ down_proj[e]
            written = unit @ experts.down_proj[e]
        torch.testing.assert_close(W[:, e * d_ff : (e + 1) * d_ff], written.T.detach())


def test_experts_stacked_in_one_2d_parameter_are_read_per_expert():
    """DBRX stores every expert's down projection in one ``[E * d_ff, d_model]`` parameter (``w2``, beside
    ``w1``/``v1`` of the same shape) and slices expert e as rows ``e * d_ff ..``: its value vector j is what
    the expert writes for a unit activation of neuron j (``act @ w2_e``)."""
    model = build_family_model("dbrx", VOCAB)
    adapter = get_adapter(model)
    glu = model.transformer.blocks[0].ffn.experts.mlp
    d, n_experts = adapter.hidden_size, glu.moe_num_experts
    d_ff = glu.w2.shape[0] // n_experts
    W = adapter.down_proj_weight(0)
    assert W.shape == (d, n_experts * d_ff)
    for e in (0, n_experts - 1):
        written = torch.eye(d_ff) @ glu.w2.view(n_experts, d_ff, d)[e]
        torch.testing.assert_close(W[:, e * d_ff : (e + 1) * d_ff], written.T.detach())


def test_sibling_moe_and_shared_mlp_read_as_one_ffn():
    """Granite-MoE-Hybrid's layer adds a routed MoE block and a shared MLP, siblings of each other: the FFN
    the readers hook is their sum (checked against the layer's own residual update), and its value vectors
    are the experts' columns then the shared MLP's."""
    model = build_family_model("granitemoehybrid", VOCAB)
    adapter = get_adapter(model)
    layer = model.model.layers[1]
    seen: dict[str, torch.Tensor] = {}
    handles = [
        adapter.mlp_module(1).register_forward_hook(lambda _m, _i, out: seen.__setitem__("ffn", out)),
        layer.post_attention_layernorm.register_forward_pre_hook(
            lambda _m, args: seen.__setitem__("residual", args[0])
        ),
        layer.register_forward_hook(
            lambda _m, _i, out: seen.__setitem__("out", out[0] if isinstance(out, tuple) else out)
        ),
    ]
    ids = torch.randint(5, VOCAB, (1, 12), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
    update = (seen["out"] - seen["residual"]) / layer.residual_multiplier
    # the update is recovered by a subtraction of two residual-sized float32 values and a division: a few
    # roundings of the residual's size, over the multiplier
    eps = torch.finfo(torch.float32).eps
    atol = 4 * eps * float(seen["out"].abs().max()) / layer.residual_multiplier
    torch.testing.assert_close(seen["ffn"], update, rtol=4 * eps, atol=atol)
    shared = layer.shared_mlp.output_linear.weight
    W = adapter.down_proj_weight(1)
    torch.testing.assert_close(W[:, -shared.shape[1] :], shared.detach())
    assert W.shape[1] > shared.shape[1]


def test_shared_expert_columns_follow_the_routed_ones():
    model = build_family_model("qwen2_moe", VOCAB)
    adapter = get_adapter(model)
    mlp = model.model.layers[0].mlp
    W = adapter.down_proj_weight(0)
    shared = mlp.shared_expert.down_proj.weight
    torch.testing.assert_close(W[:, -shared.shape[1] :], shared.detach())


def test_family_found_by_model_class_not_model_type():
    """EXAONE and InternLM3 configs build a plain LlamaForCausalLM: the same layout as Llama's."""
    for family in ("exaone", "internlm3"):
        model = build_family_model(family, VOCAB)
        assert type(model).__name__ == "LlamaForCausalLM"
        adapter = get_adapter(model)
        assert adapter.head_layers == adapter.ffn_layers == list(range(adapter.num_layers))
        assert adapter.layouts[0].qkv_layout == "separate"


@contextlib.contextmanager
def _capture_qk(model):
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    calls = []

    def fn(module, query, key, value, attention_mask, **kwargs):
        calls.append((query.detach().clone(), key.detach().clone()))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("lm_interp_test_detect", fn)
    old = model.config._attn_implementation
    model.config._attn_implementation = "lm_interp_test_detect"
    try:
        yield calls
    finally:
        model.config._attn_implementation = old


@pytest.mark.parametrize("family", ["gpt_neox", "phi3", "gpt2", "granite", "gpt_bigcode", "stablelm"])
def test_qk_weights_reproduce_the_models_queries_and_keys(family):
    """At position 0 rotary is the identity and the difference of two sequences cancels biases, so the
    model's own ``q_a - q_b`` must equal ``Wq (x_a - x_b)`` with the adapter's Wq (likewise for k): this is
    what decides the fused layouts (``[q | k | v]`` or per head, `FUSED_PER_HEAD`)."""
    model = build_family_model(family, VOCAB)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    adapter = get_adapter(model)
    layer = adapter.head_layers[0]
    attn = adapter.attention_module(layer)
    seen = {}

    def keep_input(_module, args, kwargs):
        seen.setdefault("x", (args[0] if args else kwargs["hidden_states"]).detach())

    handle = attn.register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        with torch.no_grad(), _capture_qk(model) as calls:
            model(input_ids=torch.tensor([[5, 40, 41], [9, 40, 41]]))
    finally:
        handle.remove()
    q, k = calls[adapter.attention_layers.index(layer)]
    wq, wk = adapter.qk_weights(layer)
    dx = seen["x"][0, 0] - seen["x"][1, 0]
    groups = adapter.num_heads // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    torch.testing.assert_close(
        q[0, :, 0] - q[1, :, 0], torch.einsum("hed,d->he", wq, dx), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        k[0, :, 0] - k[1, :, 0], torch.einsum("hed,d->he", wk, dx), atol=1e-4, rtol=1e-4
    )
    assert (type(attn).__name__ in FUSED_PER_HEAD) == (
        adapter.layouts[layer].qkv_layout == "per_head_interleaved"
    )


def test_unreadable_fused_layout_is_left_out_not_misread():
    """CodeGen's fused projection has the [q | k | v] width but another order (model-parallel shards): read
    as [q | k | v] its queries would be wrong, so its heads are left out with the reason."""
    adapter = get_adapter(build_family_model("codegen", VOCAB))
    assert adapter.head_layers == [] and adapter.probe_layers == adapter.attention_layers
    assert "not read" in (adapter.layouts[0].why_no_heads or "")


def test_prompt_crosses_the_window():
    assert PROMPT_LEN > 8 and _mass_tolerance(PROMPT_LEN) < 1e-3


def test_readme_lists_the_supported_families_the_code_measured():
    """README's list is generated from `support.SUPPORTED_FAMILIES` (which the sweep keeps true), with the
    transformers version it was measured on and that version's count of families (checked when it is the
    installed one: another version registers other families)."""
    from pathlib import Path

    import transformers

    from lm_interp_plugin.support import MEASURED_DECODER_FAMILIES, MEASURED_TRANSFORMERS, SUPPORTED_FAMILIES
    from lm_interp_plugin.testing.families import decoder_families

    from sweep_check import README_END, README_START, render_families_section

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index(README_START) : readme.index(README_END) + len(README_END)]
    expected = render_families_section(SUPPORTED_FAMILIES, MEASURED_DECODER_FAMILIES, MEASURED_TRANSFORMERS)
    assert section == expected
    if transformers.__version__ == MEASURED_TRANSFORMERS:
        assert MEASURED_DECODER_FAMILIES == len(decoder_families())


def test_a_family_that_cannot_be_attributed_is_refused_naming_why():
    """The interpretation pass refuses a family in `arch.NOT_ATTRIBUTABLE` up front, naming it and why (no
    gradient inside the first example); any other family passes the check."""
    from types import SimpleNamespace

    model = torch.nn.Linear(2, 2)
    model.config = SimpleNamespace(model_type="reformer")
    with pytest.raises(UnsupportedArchitectureError, match="'reformer'.*training mode"):
        run_pass(model, [5, 6], [7], ["input", "input"], InterpSettings(mode="reverse", ablation=False))
    model.config = SimpleNamespace(model_type="llama")
    check_attributable(model)


def test_module_path_names_the_module_the_adapter_reads(tiny_model):
    """`module_path` is the dotted path of the very module `attention_module` / `mlp_module` return."""
    model = tiny_model("llama", seed=0)
    adapter = get_adapter(model)
    for layer in range(adapter.num_layers):
        assert model.get_submodule(adapter.module_path(layer, "attention")) is adapter.attention_module(layer)
        assert model.get_submodule(adapter.module_path(layer, "ffn")) is adapter.mlp_module(layer)
