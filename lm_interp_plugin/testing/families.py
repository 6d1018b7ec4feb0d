"""Every decoder-only causal-LM family transformers registers, as a tiny random model (tests, the sweep).

`decoder_families()` lists the ``model_type`` keys of transformers' causal-LM mapping minus the encoders and
the decoders of encoder-decoder models (`NOT_DECODER_ONLY`); `build_family_model` builds one of them from its
own default config (`AutoConfig.for_model`) with every size field it has shrunk (`SIZES`), random seeded
weights, float32, eval mode. Nothing is downloaded. Composite checkpoints (a language model inside a vision
or audio model) are built whole, their other towers shrunk with the same sizes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..arch import NOT_DECODER_ONLY

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

logger = logging.getLogger(__name__)

__all__ = ["NOT_DECODER_ONLY", "build_family_model", "decoder_families", "family_config"]

#: Size fields and the small value each gets where the family's config has the field. Chosen so that every
#: family builds and runs a 40-token forward in well under a second on one CPU core: d_model 64, 4 layers
#: (hybrid layer patterns of period <= 4 keep a softmax layer), 4 query / 2 key-value heads, FFN width 96
#: (unequal to d_model, so the d_model axis of expert tensors is unambiguous), windows and chunks of 8 (a
#: test prompt longer than 8 tokens crosses them).
SIZES: dict[str, Any] = {
    "hidden_size": 64,
    "d_model": 64,
    "n_embd": 64,
    "hidden_size_global": 64,  # BLT's local encoder/decoder read the global transformer's width
    "num_hidden_layers": 4,
    "n_layer": 4,
    "num_layers": 4,
    "num_attention_heads": 4,
    "n_head": 4,
    "num_heads": 4,
    "num_key_value_heads": 2,
    "num_kv_heads": 2,
    "head_dim": 16,
    "intermediate_size": 96,
    "dff": 96,
    "ffn_dim": 96,
    "n_inner": 96,
    "ffn_hidden_size": 96,
    "moe_intermediate_size": 48,
    "shared_expert_intermediate_size": 48,
    "num_experts": 4,
    "num_local_experts": 4,
    "n_routed_experts": 4,
    "moe_num_experts": 4,
    "num_experts_per_tok": 2,
    "num_experts_per_token": 2,
    "moe_k": 2,
    "moe_topk": 2,
    "n_group": 1,
    "topk_group": 1,
    "num_expert_group": 1,
    "q_lora_rank": 32,
    "kv_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "qk_head_dim": 16,
    "v_head_dim": 16,
    "sliding_window": 8,
    "attention_chunk_size": 8,
    "max_position_embeddings": 256,
    "n_positions": 256,
    "mamba_d_state": 8,
    "state_size": 8,
    "ssm_state_size": 8,
    "mamba_n_heads": 8,
    "mamba_d_head": 16,
    "mamba_headdim": 16,
    "mamba_head_dim": 16,
    "mamba_num_heads": 8,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "index_head_dim": 16,
    "index_n_heads": 2,
    "index_topk": 8,
    "first_k_dense_replace": 1,
    "image_size": 32,
    "patch_size": 8,
}


def decoder_families() -> list[str]:
    """The decoder-only causal-LM ``model_type`` keys transformers registers, sorted."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(mt for mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES if mt not in NOT_DECODER_ONLY)


#: Size fields a default config leaves ``None`` (derived later, or off) that must be set for a small model.
_SET_WHEN_NONE = ("head_dim", "num_experts_per_tok")

_QWEN4_EXP_INDEXER = {
    "indexer_n_heads": 2,
    "indexer_kv_heads": 1,  # the only count it accepts
    "indexer_head_dim": 16,
    "indexer_budget": 8,
    "indexer_compress_ratio": 4,
}

#: Per-family fields no size rule derives (kept few: each says why).
FAMILY_FIELDS: dict[str, dict[str, Any]] = {
    "zaya": {"num_experts_per_tok": 1},  # its config refuses any other top-k
    "mamba2": {"num_heads": 8},  # heads x head_dim must equal expand x d_model
    "falcon_h1": {"mamba_d_ssm": 128},  # mamba width = mamba heads x mamba head size
    "granitemoehybrid": {
        "layer_types": ["mamba", "attention", "mamba", "attention"]
    },  # default: no attention
    # its default config has no layer_types (None: every layer would fail); conv and attention layers
    "lfm2_moe": {"num_dense_layers": 1, "layer_types": ["conv", "full_attention", "conv", "full_attention"]},
    "dots1": {"n_routed_experts": 4, "n_shared_experts": 1},  # its default config leaves experts unset
    # its attention reads attn_config.rope_theta, which the default sub-config lacks, and clamps q/k/v by
    # clip_qkv, which it cannot leave None (torch.clamp refuses two Nones); 8 as in the released DBRX
    "dbrx": {"attn_config": {"rope_theta": 10000.0, "clip_qkv": 8.0}},
    # its rotary embedding reads rope parameters per layer type, which the default config leaves empty;
    # the multimodal rotary sections sum to half the tiny head_dim
    "cohere_compass_text": {
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}
        }
    },
    "nemotron": {"num_key_value_heads": 2},  # its default leaves it None and its attention divides by it
    # the last 2 of 4 layers (one sliding, one full) reuse the first two's keys and values: every kind of
    # layer that reads a shared cache also produces one
    "gemma3n_text": {"num_kv_shared_layers": 2},
    "gemma3n": {"text_config": {"num_kv_shared_layers": 2}},
    # its default config does not validate (an assistant has no per-layer inputs and shares every layer's
    # cache; 0 shared layers is read as all of them)
    "gemma4_assistant": {
        "text_config": {
            "hidden_size_per_layer_input": 0,
            "vocab_size_per_layer_input": 0,
            "num_kv_shared_layers": 0,
        }
    },
    "gemma4_unified_assistant": {"text_config": {"num_kv_shared_layers": 0}},
    # its default indexed-attention layers need the sparse indexer's sizes, which the default leaves None
    "qwen4_exp_text": _QWEN4_EXP_INDEXER,
    "qwen4_exp": {"text_config": _QWEN4_EXP_INDEXER},
    # its causal-LM head refuses a config that is not a decoder; its axial position embeddings split d_model
    # (their widths sum to it) over a grid of max_position_embeddings; local and LSH layers, chunks of 8
    "reformer": {
        "is_decoder": True,
        "attn_layers": ["local", "lsh", "local", "lsh"],
        "axial_pos_shape": [16, 16],
        "axial_pos_embds_dim": [16, 48],
        "attention_head_size": 16,
        "feed_forward_size": 96,
        "local_attn_chunk_length": 8,
        "lsh_attn_chunk_length": 8,
    },
    # its sliding layers' head_dim is their no-rotary part plus their rotary part (12 + 8 once the
    # per-layer no-rotary size 192 of 128 is scaled to the tiny 8); its vision and audio adapters map their
    # tower's width to the language model's
    "dots3_note_text": {"head_dim": 20},
    "dots3_note": {
        "text_config": {"head_dim": 20},
        "vision_config": {"adapter_in_dim": 64, "adapter_out_dim": 64},
        "audio_config": {"adapter_input_size": 64, "adapter_out_dim": 64, "downsample_hidden_size": 32},
    },
}

#: Families whose default config does not validate, and the family fields it needs to (their other
#: families need the default to build first: their fields fit only the tiny sizes).
_INVALID_DEFAULTS = {f: FAMILY_FIELDS[f] for f in ("gemma4_assistant",)}

#: Per-layer index lists and periods of hybrid stacks, set so that 4 layers hold every kind of layer.
_LAYER_INDEX_FIELDS = ("hybrid_layer_ids", "full_attn_idxs", "attn_layer_indices")
_PERIODS = {
    "attn_layer_period": 2,
    "attn_layer_offset": 1,
    "expert_layer_period": 2,
    "expert_layer_offset": 1,
}


def _overrides(config: PretrainedConfig, vocab_size: int) -> dict[str, Any]:
    """Constructor arguments that shrink `config` (passed back through the constructor, so that fields it
    derives, such as ``layer_types``, follow)."""
    fields = config.to_dict()
    layers = SIZES["num_hidden_layers"]
    depth = next(
        (fields[k] for k in ("num_hidden_layers", "n_layer", "num_layers", "n_layers") if k in fields), None
    )
    kw: dict[str, Any] = {}
    for key, value in SIZES.items():
        current = fields.get(key, "absent")
        if (isinstance(current, int) and not isinstance(current, bool)) or (
            key in _SET_WHEN_NONE and current is None
        ):
            kw[key] = value
    if "n_layers" in fields and isinstance(fields["n_layers"], int):
        kw["n_layers"] = layers
    if "kv_lora_rank" in fields:  # latent attention: head_dim is the rotary part; one kv head per query head
        if "head_dim" in kw:
            kw["head_dim"] = SIZES["qk_rope_head_dim"]
        if "num_key_value_heads" in kw:
            kw["num_key_value_heads"] = SIZES["num_attention_heads"]
    if isinstance(fields.get("rotary_dim"), int):
        kw["rotary_dim"] = SIZES["head_dim"] // 2
    for key, value in fields.items():
        if key in _LAYER_INDEX_FIELDS and (isinstance(value, list) or value is None):
            kw[key] = [1, 3]
        elif key in _PERIODS and isinstance(value, int):
            kw[key] = _PERIODS[key]
        elif isinstance(value, list) and depth and len(value) == depth and depth != layers and value:
            if all(isinstance(v, str) for v in value):  # every kind of layer, in order of first appearance
                kinds = list(dict.fromkeys(value))
                kw[key] = [kinds[i % len(kinds)] for i in range(layers)]
            else:
                kw[key] = value[:layers]
        elif isinstance(value, str) and key == "hybrid_override_pattern" and depth:
            kinds = list(dict.fromkeys(value))
            kw[key] = "".join(kinds[i % len(kinds)] for i in range(layers))
    if isinstance(fields.get("per_layer_config"), dict) and depth and fields["per_layer_config"]:
        kw["per_layer_config"] = _tiny_per_layer(fields, kw, depth, layers)
    if isinstance(fields.get("vocab_size"), int):
        kw["vocab_size"] = vocab_size
    family = FAMILY_FIELDS.get(str(fields.get("model_type")), {})
    kw.update(family)
    for name in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, name, None)
        if sub is not None and hasattr(sub, "to_dict"):  # a family field of a sub-config is merged into it
            extra = family.get(name) if isinstance(family.get(name), dict) else {}
            kw[name] = {**sub.to_dict(), **_overrides(sub, vocab_size), **extra}
    return kw


def _tiny_per_layer(fields: dict[str, Any], kw: dict[str, Any], depth: int, layers: int) -> dict[int, Any]:
    """The full-size model's per-layer overrides remapped to the tiny stack: tiny layer j (of the kind the
    cycled ``layer_types`` give it) takes the overrides of an original layer of that kind, each size in them
    scaled by the ratio the tiny model shrinks that field by (a layer twice as wide stays twice as wide)."""
    types = fields.get("layer_types")
    if not (isinstance(types, list) and len(types) == depth):
        types = ["layer"] * depth
    kinds = list(dict.fromkeys(types))
    of_kind = {kind: [i for i, t in enumerate(types) if t == kind] for kind in kinds}
    original = {int(k): v for k, v in fields["per_layer_config"].items()}
    tiny: dict[int, Any] = {}
    for j in range(layers):
        indices = of_kind[kinds[j % len(kinds)]]
        override = original.get(indices[min(j // len(kinds), len(indices) - 1)])
        if not override:
            continue
        scaled = {}
        for key, value in override.items():
            base = fields.get(key)
            if isinstance(value, int) and isinstance(base, int) and base and isinstance(kw.get(key), int):
                value = max(1, round(kw[key] * value / base))
            scaled[key] = value
        tiny[j] = scaled
    return tiny


def family_config(model_type: str, vocab_size: int = 300) -> PretrainedConfig:
    """The default config of `model_type` with its size fields shrunk (see `SIZES`); token ids 0, 1, 2."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **_INVALID_DEFAULTS.get(model_type, {}))
    config = AutoConfig.for_model(model_type, **_overrides(config, vocab_size))
    targets = [config]
    try:
        targets.append(config.get_text_config(decoder=True))
    except ValueError:  # several text configs: the top-level one serves
        pass
    for target in targets:
        for key, value in (("bos_token_id", 0), ("eos_token_id", 1), ("pad_token_id", 2)):
            if hasattr(target, key):
                setattr(target, key, value)
    return config


def build_family_model(model_type: str, vocab_size: int = 300, seed: int = 0) -> PreTrainedModel:
    """A tiny random causal LM of `model_type` (float32, eval mode), built without any download."""
    import torch
    from transformers import AutoModelForCausalLM

    config = family_config(model_type, vocab_size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    return model
