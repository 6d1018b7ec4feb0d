"""Architecture adapters checked numerically against what each tiny model actually computes.

The model's own query/key tensors are captured through a registered attention function (transformers'
`AttentionInterface`), which every supported family calls with per-head q and k after rotary. At position 0
rotary is the identity, and the difference of two sequences cancels projection biases, so
``q_a - q_b = Wq (x_a - x_b)`` must hold with the adapter's Wq and the normed inputs x.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from lm_interp_plugin.arch import UnsupportedArchitectureError, get_adapter, supported_families
from lm_interp_plugin.testing.tiny import TINY_FAMILIES

CAPTURE = "lm_interp_test_capture"


@contextlib.contextmanager
def capture_qk(model):
    """Record (query, key) of every attention call, delegating the computation to SDPA."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def fn(module, query, key, value, attention_mask, **kwargs):
        calls.append((query.detach().clone(), key.detach().clone()))
        kwargs.pop("softcap", None)  # Gemma-2's logit soft-capping; irrelevant to the captured q/k
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(CAPTURE, fn)
    old = model.config._attn_implementation
    model.config._attn_implementation = CAPTURE
    try:
        yield calls
    finally:
        model.config._attn_implementation = old


@contextlib.contextmanager
def capture_inputs(modules):
    """Record the first positional or ``hidden_states`` input of each module, in order."""
    seen: dict[int, torch.Tensor] = {}
    handles = []

    def make(i):
        def pre(mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            seen[i] = x.detach().clone()

        return pre

    try:
        for i, m in enumerate(modules):
            handles.append(m.register_forward_pre_hook(make(i), with_kwargs=True))
        yield seen
    finally:
        for h in handles:
            h.remove()


def reference_norm(model, adapter, layer, x):
    """The input norm computed from its definition and the adapter's effective weight/bias."""
    w = adapter.input_norm_weight(layer)
    b = adapter.input_norm_bias(layer)
    cfg = model.config
    if adapter.spec.norm_type == "rms":
        eps = cfg.rms_norm_eps
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    else:
        eps = getattr(cfg, "layer_norm_eps", None) or getattr(cfg, "layer_norm_epsilon", None) or 1e-5
        y = F.layer_norm(x, (x.shape[-1],), eps=eps)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


def test_supported_families_cover_tiny_families():
    assert set(TINY_FAMILIES) <= set(supported_families())


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_adapter_matches_model_computation(family, tok, tiny_model):
    torch.manual_seed(0)
    model = tiny_model(family, tokenizer=tok, layers=2, kv_heads=2)
    with torch.no_grad():
        for p in model.parameters():  # non-trivial norm weights and biases everywhere
            p.add_(0.05 * torch.randn_like(p))
    ad = get_adapter(model)
    assert ad.spec.family == family
    assert ad.num_layers == 2 and ad.num_heads == 4 and ad.hidden_size == 64 and ad.head_dim == 16

    ids = torch.tensor([[5, 40, 41, 42, 43], [9, 40, 41, 42, 43]])
    layers = ad.layers()
    attn_mods = [ad.attention_module(i) for i in range(ad.num_layers)]
    with (
        torch.no_grad(),
        capture_qk(model) as qk,
        capture_inputs(layers) as layer_in,
        capture_inputs(attn_mods) as attn_in,
    ):
        out = model(ids, output_hidden_states=True)
    assert len(qk) == ad.num_layers

    # embeddings: the model's embedding module output is E[ids] * scale
    emb_out = model.get_input_embeddings()(ids)
    E = ad.input_embedding_matrix()
    assert torch.allclose(emb_out, E[ids] * ad.embedding_scale(), atol=1e-5)
    assert torch.equal(ad.output_embedding_matrix(), model.get_output_embeddings().weight)

    q_norm_w, _ = ad.qk_head_norm_weights(0)
    for layer in range(ad.num_layers):
        # the attention module's input is the input norm of the layer input
        x = reference_norm(model, ad, layer, layer_in[layer])
        assert torch.allclose(attn_in[layer], x, atol=1e-4), f"input norm of layer {layer}"

        wq, wk = ad.qk_weights(layer)
        assert wq.shape == wk.shape == (ad.num_heads, ad.head_dim, ad.hidden_size)
        q_model, k_model = qk[layer]  # [batch, heads, seq, head_dim], key with kv heads
        dx = x[0, 0] - x[1, 0]
        q_diff = torch.einsum("hed,d->he", wq, dx)
        k_diff = torch.einsum("hed,d->he", wk, dx)
        n_rep = ad.num_heads // ad.num_kv_heads
        k_model_exp = k_model.repeat_interleave(
            n_rep, dim=1
        )  # HF repeat_kv: query head h uses kv head h // n_rep
        if q_norm_w is None:
            assert torch.allclose(q_model[0, :, 0] - q_model[1, :, 0], q_diff, atol=1e-4)
            assert torch.allclose(k_model_exp[0, :, 0] - k_model_exp[1, :, 0], k_diff, atol=1e-4)
        else:  # qwen3: per-head RMSNorm after the projection (no projection bias)
            qn, kn = ad.qk_head_norm_weights(layer)
            eps = model.config.rms_norm_eps
            q_raw = torch.einsum("hed,bd->bhe", wq, x[:, 0])
            k_raw = torch.einsum("hed,bd->bhe", wk, x[:, 0])
            q_ref = q_raw * torch.rsqrt(q_raw.pow(2).mean(-1, keepdim=True) + eps) * qn
            k_ref = k_raw * torch.rsqrt(k_raw.pow(2).mean(-1, keepdim=True) + eps) * kn
            assert torch.allclose(q_model[:, :, 0], q_ref, atol=1e-4)
            assert torch.allclose(k_model_exp[:, :, 0], k_ref, atol=1e-4)

    assert out.logits.shape[-1] == E.shape[0]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_down_proj_columns_reproduce_mlp_output(family, tok, tiny_model):
    model = tiny_model(family, tokenizer=tok, layers=1)
    ad = get_adapter(model)
    mlp = ad.mlp_module(0)
    w_down = ad.down_proj_weight(0)
    assert w_down.shape == (ad.hidden_size, model.config.intermediate_size if family != "gpt2" else 128)
    ((down_path, _),) = ad.layouts[0].down
    down_mod = mlp.get_submodule(down_path.rsplit(".", 1)[0])
    got: dict[str, torch.Tensor] = {}
    h1 = down_mod.register_forward_pre_hook(lambda m, a: got.__setitem__("act", a[0].detach()))
    h2 = mlp.register_forward_hook(lambda m, a, o: got.__setitem__("out", o.detach()))
    try:
        with torch.no_grad():
            model(torch.tensor([[3, 50, 60, 70]]))
    finally:
        h1.remove()
        h2.remove()
    bias = ad.down_proj_bias(0)
    expected = got["act"] @ w_down.T + (0 if bias is None else bias)
    assert torch.allclose(got["out"], expected, atol=1e-5)


def test_gqa_expansion_repeats_each_kv_head(tok, tiny_model):
    model = tiny_model("llama", tokenizer=tok, heads=8, kv_heads=2, hidden=64)
    ad = get_adapter(model)
    assert (ad.num_heads, ad.num_kv_heads) == (8, 2)
    _, wk = ad.qk_weights(0)
    raw = model.model.layers[0].self_attn.k_proj.weight.reshape(2, 8, 64)
    for h in range(8):
        assert torch.equal(wk[h], raw[h // 4])


def test_gemma_norm_offset_and_embedding_scale(tok, tiny_model):
    model = tiny_model("gemma", tokenizer=tok)
    ad = get_adapter(model)
    raw = model.model.layers[1].input_layernorm.weight
    assert torch.equal(ad.input_norm_weight(1), raw + 1)
    assert ad.embedding_scale() == pytest.approx(64**0.5)


def test_olmo_norm_has_no_weight(tok, tiny_model):
    ad = get_adapter(tiny_model("olmo", tokenizer=tok))
    assert ad.input_norm_weight(0) is None and ad.input_norm_bias(0) is None


def test_no_decoder_layers_names_the_modules_seen(tok, tiny_model):
    model = tiny_model("llama", tokenizer=tok)
    model.model.blocks = model.model.layers
    model.model.layers = torch.nn.ModuleList(list(model.model.layers)[:1])  # not num_hidden_layers long
    del model.model.blocks
    with pytest.raises(
        UnsupportedArchitectureError, match=r"no nn.ModuleList of 2 decoder layers.*Module names"
    ):
        get_adapter(model)


def test_unreadable_query_projection_is_said_not_guessed(tok, tiny_model):
    """A renamed q projection: attention is still found (it calls the interface) but its heads are not
    readable, and qk_weights says why instead of reading another matrix."""
    model = tiny_model("llama", tokenizer=tok)
    for layer in model.model.layers:
        layer.self_attn.q_proj_renamed = layer.self_attn.q_proj
        del layer.self_attn.q_proj
    ad = get_adapter(model)
    assert ad.probe_layers == [0, 1] and ad.head_layers == []
    with pytest.raises(UnsupportedArchitectureError, match="no query/key projection.*q_proj_renamed"):
        ad.qk_weights(0)


def test_model_without_config_is_rejected():
    with pytest.raises(UnsupportedArchitectureError, match="no .config"):
        get_adapter(torch.nn.Linear(2, 2))


def test_layer_out_of_range(tok, tiny_model):
    ad = get_adapter(tiny_model("gpt2", tokenizer=tok))
    with pytest.raises(IndexError, match="out of range"):
        ad.qk_weights(5)


@pytest.mark.float_sensitive
def test_latent_attention_maps_equal_the_module_up_to_its_two_latent_norm_scales():
    """DeepSeek-V3's multi-head latent attention: the per-head q and k maps explain-heads reads are the
    module's low-rank maps composed with the latent norms' weights. They equal the module's query and key
    exactly once each is divided by its per-token RMS scale (q: of q_a_proj(x); the key's no-rope part: of the
    kv latent), which a weight-only map cannot carry: the approximation is those two scalars, nothing else.
    Scores between tokens at position 0 (rotary embedding the identity there, its interleave a permutation
    shared by q and k) check the composition, head order and norm folding."""
    from lm_interp_plugin.testing.families import build_family_model

    model = build_family_model("deepseek_v3", vocab_size=300, seed=0)
    with torch.no_grad():
        for p in model.parameters():  # non-trivial norm weights everywhere
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ad = get_adapter(model)
    assert ad.layouts[0].qkv_layout == "latent"
    attn = ad.attention_module(0)
    ids = torch.tensor([[7], [40], [123]])  # three tokens, each at position 0 of its row
    with torch.no_grad(), capture_qk(model) as qk, capture_inputs([attn]) as attn_in:
        model(ids)
    x = attn_in[0][:, 0]  # [rows, d]: the attention's (normed) input
    q_model, k_model = qk[0]  # [rows, heads, 1, qk_head_dim]
    true_scores = torch.einsum("ahe,bhe->hab", q_model[:, :, 0], k_model[:, :, 0])

    def inv_rms(v: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
        return torch.rsqrt(v.pow(2).mean(-1) + norm.variance_epsilon)

    wq, wk = ad.qk_weights(0)
    nope = attn.qk_nope_head_dim
    q, k = torch.einsum("hed,rd->rhe", wq, x), torch.einsum("hed,rd->rhe", wk, x)
    with torch.no_grad():
        s_q = inv_rms(attn.q_a_proj(x), attn.q_a_layernorm) if attn.q_lora_rank else torch.ones(len(x))
        s_kv = inv_rms(attn.kv_a_proj_with_mqa(x)[:, : attn.kv_lora_rank], attn.kv_a_layernorm)
    composed_nope = torch.einsum("ahe,bhe->hab", q[..., :nope], k[..., :nope])
    composed_rope = torch.einsum("ahe,bhe->hab", q[..., nope:], k[..., nope:])
    expected = s_q[None, :, None] * (composed_nope * s_kv[None, None, :] + composed_rope)
    scale = float(expected.abs().max())
    eps = torch.finfo(torch.float32).eps
    atol = 8 * eps * ad.hidden_size * scale  # float32 rounding of sums of about d_model products
    torch.testing.assert_close(true_scores, expected, rtol=0, atol=atol)
    # the scales are not 1 here: without them (explain-heads' weight-only maps) the scores differ
    plain = composed_nope + composed_rope
    assert float((true_scores - plain).abs().max()) > 100 * atol
