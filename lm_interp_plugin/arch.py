"""Architecture adapters: the only place in lm-interp that knows the module names of a model family.

Architecture facts are data: one `ArchSpec` row per family in `ARCH_SPECS`, looked up by
``config.model_type``. `ArchAdapter` turns a row into the tensors the methods need (embeddings, per-head
query/key weights with grouped-query key heads expanded, effective input-norm weights, FFN down-projections)
and the modules the harness hooks (attention, MLP). A path that does not resolve raises
`UnsupportedArchitectureError` listing the module names it did see, never a silent fallback: measuring the
wrong module is the worst bug an interpretability tool can have.

Shapes: ``num_heads x head_dim x d_model`` for per-head projections, ``vocab x d_model`` for embeddings,
``d_model x d_ff`` for the FFN down-projection (its columns are the FFN value vectors).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, replace

from torch import Tensor, nn

logger = logging.getLogger(__name__)

#: How the query/key/value projections are stored.
#: ``separate``: three Linear modules (q_proj, k_proj, v_proj), weight ``[out, d_model]``.
#: ``concat``: one Linear whose output is [q (all heads) | k (kv heads) | v (kv heads)] (Phi-3).
#: ``concat_conv1d``: GPT-2's Conv1D, weight ``[d_model, 3 * d_model]`` (transposed), output [q | k | v].
#: ``per_head_interleaved``: one Linear whose output, viewed as ``[heads, 3 * head_dim]``, holds
#: [q_h | k_h | v_h] per head (GPT-NeoX).
QKV_LAYOUTS = ("separate", "concat", "concat_conv1d", "per_head_interleaved")


class UnsupportedArchitectureError(ValueError):
    """The model's family is not in `ARCH_SPECS`, or a module path of its row does not resolve."""


@dataclass(frozen=True)
class ArchSpec:
    """Module paths and numeric conventions of one model family.

    Paths are relative to the model (``embed``, ``layers``, ``lm_head``) or to one decoder layer (the rest).

    Attributes:
        family: the family name (also the first of ``model_types``).
        model_types: the ``config.model_type`` values this row serves.
        embed: input token embedding module.
        layers: the ``ModuleList`` of decoder layers.
        lm_head: output projection; ``None`` reads ``model.get_output_embeddings()``.
        final_norm: the norm applied to the last layer's residual before the output projection (the logit
            lens applies it to every layer's residual).
        attention: attention module of a layer (its input is the normed hidden state).
        mlp: FFN module of a layer (its output is the FFN output).
        input_norm: the norm applied before attention.
        qkv_layout: one of `QKV_LAYOUTS`.
        q_proj, k_proj: the query/key projections (``separate`` layout).
        qkv_proj: the fused projection (other layouts).
        q_norm, k_norm: per-head RMSNorm applied to q and k after the projection (Qwen3), else ``None``.
        down_proj: the FFN down-projection.
        down_transposed: the down-projection weight is stored ``[d_ff, d_model]`` (GPT-2 Conv1D).
        norm_type: ``"rms"`` or ``"layer"``.
        norm_weight_offset: the norm multiplies by ``offset + weight`` (1.0 for Gemma, else 0.0).
        embed_scale: ``"none"`` or ``"sqrt_hidden"`` (Gemma multiplies embeddings by sqrt(d_model)).
        post_mlp_norm: a norm applied to the MLP output before the residual add (Gemma-2), else ``None``.
    """

    family: str
    model_types: tuple[str, ...]
    embed: str
    layers: str
    attention: str
    mlp: str
    input_norm: str
    qkv_layout: str
    down_proj: str
    lm_head: str | None = "lm_head"
    final_norm: str = "model.norm"
    q_proj: str | None = None
    k_proj: str | None = None
    qkv_proj: str | None = None
    q_norm: str | None = None
    k_norm: str | None = None
    down_transposed: bool = False
    norm_type: str = "rms"
    norm_weight_offset: float = 0.0
    embed_scale: str = "none"
    post_mlp_norm: str | None = None

    def layer_paths(self) -> dict[str, str]:
        """The per-layer module paths this row names (for validation and error messages)."""
        names = (
            "attention",
            "mlp",
            "input_norm",
            "q_proj",
            "k_proj",
            "qkv_proj",
            "q_norm",
            "k_norm",
            "down_proj",
            "post_mlp_norm",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def _llama_like(family: str, **overrides) -> ArchSpec:
    """A row for the Llama layout (model.layers[i].self_attn.q_proj, ...), with `overrides` applied."""
    base = ArchSpec(
        family=family,
        model_types=(family,),
        embed="model.embed_tokens",
        layers="model.layers",
        attention="self_attn",
        mlp="mlp",
        input_norm="input_layernorm",
        qkv_layout="separate",
        q_proj="self_attn.q_proj",
        k_proj="self_attn.k_proj",
        down_proj="mlp.down_proj",
    )
    return replace(base, **overrides)


#: One row per supported family.
ARCH_SPECS: tuple[ArchSpec, ...] = (
    _llama_like("llama"),
    _llama_like("mistral"),
    _llama_like("qwen2"),
    _llama_like("qwen3", q_norm="self_attn.q_norm", k_norm="self_attn.k_norm"),
    _llama_like("gemma", norm_weight_offset=1.0, embed_scale="sqrt_hidden"),
    _llama_like(
        "gemma2",
        norm_weight_offset=1.0,
        embed_scale="sqrt_hidden",
        post_mlp_norm="post_feedforward_layernorm",
    ),
    _llama_like("olmo", norm_type="layer"),
    _llama_like("phi3", qkv_layout="concat", q_proj=None, k_proj=None, qkv_proj="self_attn.qkv_proj"),
    ArchSpec(
        family="gpt2",
        model_types=("gpt2",),
        embed="transformer.wte",
        layers="transformer.h",
        attention="attn",
        mlp="mlp",
        input_norm="ln_1",
        qkv_layout="concat_conv1d",
        qkv_proj="attn.c_attn",
        down_proj="mlp.c_proj",
        final_norm="transformer.ln_f",
        down_transposed=True,
        norm_type="layer",
    ),
    ArchSpec(
        family="gpt_neox",
        model_types=("gpt_neox",),
        embed="gpt_neox.embed_in",
        layers="gpt_neox.layers",
        attention="attention",
        mlp="mlp",
        input_norm="input_layernorm",
        qkv_layout="per_head_interleaved",
        qkv_proj="attention.query_key_value",
        down_proj="mlp.dense_4h_to_h",
        final_norm="gpt_neox.final_layer_norm",
        norm_type="layer",
    ),
)

_BY_MODEL_TYPE: dict[str, ArchSpec] = {mt: spec for spec in ARCH_SPECS for mt in spec.model_types}


def supported_families() -> list[str]:
    """Names of the families `get_adapter` supports."""
    return [spec.family for spec in ARCH_SPECS]


def _seen_module_names(model: nn.Module, limit: int = 40) -> str:
    """Module names of `model` with layer indices collapsed to ``N``, for error messages."""
    seen: list[str] = []
    for name, _ in model.named_modules():
        if not name:
            continue
        collapsed = re.sub(r"\.\d+(\.|$)", r".N\1", name)
        if collapsed not in seen:
            seen.append(collapsed)
    more = f" ... (+{len(seen) - limit} more)" if len(seen) > limit else ""
    return ", ".join(seen[:limit]) + more


def _resolve(model: nn.Module, root: nn.Module, path: str, where: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError as exc:
        raise UnsupportedArchitectureError(
            f"module path {path!r} ({where}) does not resolve in {type(model).__name__} "
            f"(model_type={getattr(model.config, 'model_type', None)!r}). Module names seen: "
            f"{_seen_module_names(model)}. Supported families: {', '.join(supported_families())}. "
            "Fix: add or correct the family's row in lm_interp_plugin/arch.py ARCH_SPECS."
        ) from exc


def _text_config(model: nn.Module):
    config = model.config
    get_text = getattr(config, "get_text_config", None)
    return get_text() if callable(get_text) else config


@dataclass(frozen=True)
class ArchAdapter:
    """Uniform access to one loaded model through its family's `ArchSpec` row."""

    model: nn.Module
    spec: ArchSpec
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int

    # -- modules ---------------------------------------------------------------------------------------------
    def layers(self) -> list[nn.Module]:
        """The decoder layers, in order."""
        return list(_resolve(self.model, self.model, self.spec.layers, "layers"))

    def _layer_module(self, layer: int, path: str, what: str) -> nn.Module:
        if not 0 <= layer < self.num_layers:
            raise IndexError(
                f"layer {layer} out of range: the model has {self.num_layers} layers "
                f"(0..{self.num_layers - 1})"
            )
        return _resolve(self.model, self.layers()[layer], path, f"{what} of layer {layer}")

    def attention_module(self, layer: int) -> nn.Module:
        """The attention module of `layer` (its input is the input-normed hidden state)."""
        return self._layer_module(layer, self.spec.attention, "attention")

    def mlp_module(self, layer: int) -> nn.Module:
        """The FFN module of `layer`; its forward output is the FFN output (before any post-MLP norm)."""
        return self._layer_module(layer, self.spec.mlp, "mlp")

    def final_norm_module(self) -> nn.Module:
        """The norm between the last layer's residual and the output projection (what the logit lens applies
        to every layer's residual)."""
        return _resolve(self.model, self.model, self.spec.final_norm, "final_norm")

    def output_head_module(self) -> nn.Module:
        """The output projection (LM head): residual after the final norm -> logits."""
        if self.spec.lm_head is None:
            return self.model.get_output_embeddings()
        return _resolve(self.model, self.model, self.spec.lm_head, "lm_head")

    # -- embeddings ------------------------------------------------------------------------------------------
    def input_embedding_matrix(self) -> Tensor:
        """Input token embeddings ``[vocab, d_model]``, unscaled (see `embedding_scale`)."""
        return _resolve(self.model, self.model, self.spec.embed, "embed").weight.detach()

    def output_embedding_matrix(self) -> Tensor:
        """Output (unembedding) matrix ``[vocab, d_model]``; the input embeddings when tied."""
        if self.spec.lm_head is None:
            head = self.model.get_output_embeddings()
        else:
            head = _resolve(self.model, self.model, self.spec.lm_head, "lm_head")
        return head.weight.detach()

    def embedding_scale(self) -> float:
        """The factor the model multiplies token embeddings by before the first layer."""
        if self.spec.embed_scale == "sqrt_hidden":
            return math.sqrt(self.hidden_size)
        return 1.0

    # -- per-layer weights -----------------------------------------------------------------------------------
    def input_norm_weight(self, layer: int) -> Tensor | None:
        """Effective multiplicative weight ``[d_model]`` of the pre-attention norm (Gemma: 1 + w).

        ``None`` for a norm without a learned weight (OLMo's non-parametric LayerNorm).
        """
        norm = self._layer_module(layer, self.spec.input_norm, "input_norm")
        weight = getattr(norm, "weight", None)
        if weight is None:
            return None
        return weight.detach() + self.spec.norm_weight_offset

    def input_norm_bias(self, layer: int) -> Tensor | None:
        """Additive bias ``[d_model]`` of the pre-attention norm (LayerNorm families), else ``None``."""
        norm = self._layer_module(layer, self.spec.input_norm, "input_norm")
        bias = getattr(norm, "bias", None)
        return None if bias is None else bias.detach()

    def qk_head_norm_weights(self, layer: int) -> tuple[Tensor | None, Tensor | None]:
        """Weights ``[head_dim]`` of the per-head q/k RMSNorms applied after projection (Qwen3), else None."""
        out: list[Tensor | None] = []
        for path, what in ((self.spec.q_norm, "q_norm"), (self.spec.k_norm, "k_norm")):
            if path is None:
                out.append(None)
                continue
            w = self._layer_module(layer, path, what).weight.detach()
            out.append(w + self.spec.norm_weight_offset)
        return out[0], out[1]

    def qk_weights(self, layer: int) -> tuple[Tensor, Tensor]:
        """Per-head query and key weights as applied to the normed hidden state (biases ignored).

        Returns:
            ``(Wq, Wk)``, both ``[num_heads, head_dim, d_model]``; key heads of grouped-query attention are
            repeated so that query head h pairs with key head ``h // (num_heads // num_kv_heads)``.
        """
        spec, nh, nkv, hd, d = self.spec, self.num_heads, self.num_kv_heads, self.head_dim, self.hidden_size
        if spec.qkv_layout == "separate":
            wq = self._layer_module(layer, spec.q_proj, "q_proj").weight.detach()
            wk = self._layer_module(layer, spec.k_proj, "k_proj").weight.detach()
        else:
            w = self._layer_module(layer, spec.qkv_proj, "qkv_proj").weight.detach()
            if spec.qkv_layout == "concat":
                wq, wk = w[: nh * hd], w[nh * hd : nh * hd + nkv * hd]
            elif spec.qkv_layout == "concat_conv1d":
                wt = w.t()  # Conv1D stores [d_in, d_out]
                wq, wk = wt[: nh * hd], wt[nh * hd : nh * hd + nkv * hd]
            elif spec.qkv_layout == "per_head_interleaved":
                per_head = w.reshape(nh, 3, hd, d)
                wq, wk = per_head[:, 0].reshape(nh * hd, d), per_head[:, 1].reshape(nh * hd, d)
            else:
                raise UnsupportedArchitectureError(
                    f"unknown qkv_layout {spec.qkv_layout!r} in the {spec.family!r} row; use one of "
                    f"{QKV_LAYOUTS}"
                )
        wq = wq.reshape(nh, hd, d)
        wk = wk.reshape(nkv, hd, d)
        if nkv != nh:
            wk = wk.repeat_interleave(nh // nkv, dim=0)
        return wq, wk

    def down_proj_weight(self, layer: int) -> Tensor:
        """FFN down-projection ``[d_model, d_ff]``; its columns are the FFN value vectors."""
        w = self._layer_module(layer, self.spec.down_proj, "down_proj").weight.detach()
        return w.t() if self.spec.down_transposed else w

    def down_proj_bias(self, layer: int) -> Tensor | None:
        """Bias ``[d_model]`` of the FFN down-projection, or ``None``."""
        bias = getattr(self._layer_module(layer, self.spec.down_proj, "down_proj"), "bias", None)
        return None if bias is None else bias.detach()


def get_spec(model_type: str) -> ArchSpec:
    """The `ArchSpec` row of `model_type`; raises `UnsupportedArchitectureError` with the supported list."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} is not supported. Supported families: "
            f"{', '.join(supported_families())}. "
            "Fix: use a model of a supported family, or add a row to ARCH_SPECS in lm_interp_plugin/arch.py."
        ) from None


def get_adapter(model: nn.Module) -> ArchAdapter:
    """The `ArchAdapter` of a loaded Hugging Face causal LM, with every module path checked up front."""
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no .config; pass a Hugging Face PreTrainedModel "
            f"(supported families: {', '.join(supported_families())})"
        )
    text = _text_config(model)
    model_type = getattr(text, "model_type", None) or getattr(config, "model_type", None)
    spec = get_spec(model_type)
    spec_embed = _resolve(model, model, spec.embed, "embed")
    layers = _resolve(model, model, spec.layers, "layers")
    if len(layers) == 0:
        raise UnsupportedArchitectureError(f"{type(model).__name__} has no decoder layers at {spec.layers!r}")
    for what, path in spec.layer_paths().items():
        _resolve(model, layers[0], path, f"{what} of layer 0")
    hidden = int(spec_embed.weight.shape[1])
    num_heads = int(text.num_attention_heads)
    num_kv = int(getattr(text, "num_key_value_heads", None) or num_heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // num_heads)
    if num_heads % num_kv:
        raise UnsupportedArchitectureError(
            f"num_attention_heads={num_heads} is not a multiple of num_key_value_heads={num_kv} in "
            f"{model_type!r}"
        )
    adapter = ArchAdapter(
        model=model,
        spec=spec,
        num_layers=len(layers),
        num_heads=num_heads,
        num_kv_heads=num_kv,
        head_dim=head_dim,
        hidden_size=hidden,
    )
    _check_projection_sizes(adapter)
    return adapter


def _check_projection_sizes(adapter: ArchAdapter) -> None:
    """Fail early, with the numbers that disagree, when head counts do not match the stored weights."""
    spec, nh, nkv, hd, d = (
        adapter.spec,
        adapter.num_heads,
        adapter.num_kv_heads,
        adapter.head_dim,
        adapter.hidden_size,
    )
    layer0 = adapter.layers()[0]
    if spec.qkv_layout == "separate":
        q = _resolve(adapter.model, layer0, spec.q_proj, "q_proj").weight
        k = _resolve(adapter.model, layer0, spec.k_proj, "k_proj").weight
        got, want = (tuple(q.shape), tuple(k.shape)), ((nh * hd, d), (nkv * hd, d))
    else:
        w = _resolve(adapter.model, layer0, spec.qkv_proj, "qkv_proj").weight
        shape = tuple(w.t().shape) if spec.qkv_layout == "concat_conv1d" else tuple(w.shape)
        got, want = shape, ((nh + 2 * nkv) * hd, d)
    if got != want:
        raise UnsupportedArchitectureError(
            f"{spec.family!r}: query/key weight shapes {got} do not match num_heads={nh}, "
            f"num_kv_heads={nkv}, head_dim={hd}, d_model={d} (expected {want}); the config and weights "
            "disagree"
        )
