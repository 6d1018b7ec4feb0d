"""Architecture adapters: the only place in lm-interp that knows how a model's modules are laid out.

The layout is *found*, not listed per family (`detect`):

* decoder layers: the ``nn.ModuleList`` whose length is the text config's ``num_hidden_layers`` (inside
  composite checkpoints too: ``model.language_model.layers``, never a vision or audio tower);
* attention: per layer, the outermost submodule whose forward calls transformers' ``AttentionInterface``
  (``ALL_ATTENTION_FUNCTIONS``): softmax attention the per-layer probe can measure exactly. Layers without one
  are linear-attention / state-space layers (named by their mixer's class) or attention outside the
  interface (eager fallback);
* query/key weights: separate projections (``q_proj``/``k_proj`` and kin, GQA/MQA by their sizes, a gated
  query of twice the width), one fused projection (``[q | k | v]``, GPT-2's transposed Conv1D, or per-head
  interleaved: `FUSED_PER_HEAD`), or latent attention (MLA: the low-rank maps composed with the inner norm's
  weight folded in); per-head q/k norms or norms over the whole projection;
* FFN: the outermost submodule whose class is an MLP / feed-forward / MoE block; its value vectors are the
  columns of every down projection inside it: the dense down projection, each routed expert's (3-D expert
  tensors read in either orientation by their ``d_model`` axis), and shared experts';
* norms: the pre-attention norm by name (none for post-norm stacks such as OLMo 2), and its convention
  (RMSNorm, Gemma's ``1 + w``, LayerNorm, parameter-free) by evaluating the module itself;
* the embedding scale (Gemma's ``sqrt(d_model)``) by one two-token forward.

Explicit knowledge is kept to what cannot be decided from the modules (`FUSED_PER_HEAD`), each covered by a
test. A path that does not resolve raises `UnsupportedArchitectureError` listing the module names seen, never
a silent fallback: measuring the wrong module is the worst bug an interpretability tool can have.

Shapes: ``num_heads x head_dim x d_model`` for per-head projections, ``vocab x d_model`` for embeddings,
``d_model x d_ff`` for the FFN down-projection (its columns are the FFN value vectors; for MoE the experts'
columns side by side).
"""

from __future__ import annotations

import inspect
import logging
import re
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

#: How the query/key projections are stored.
#: ``separate``: q and k Linear modules, weight ``[out, d_model]``.
#: ``gated``: as separate, with q holding [q_h | gate_h] per head (Qwen3-Next).
#: ``concat``: one Linear whose output is [q (all heads) | k (kv heads) | v (kv heads)] (Phi-3).
#: ``concat_conv1d``: GPT-2's Conv1D, weight ``[d_model, out]`` (transposed), output [q | k | v].
#: ``per_head_interleaved``: one Linear whose output, viewed as ``[heads, 3 * head_dim]``, holds
#: [q_h | k_h | v_h] per head (GPT-NeoX).
#: ``latent``: multi-head latent attention (DeepSeek-V2/V3): low-rank q and kv maps with a norm between.
QKV_LAYOUTS = ("separate", "gated", "concat", "concat_conv1d", "per_head_interleaved", "latent")

#: Fused q/k/v projections laid out per head ([q_h | k_h | v_h]) rather than [q | k | v]: the weight alone
#: cannot tell the two apart (same shape), so these attention classes are listed. Test:
#: tests/base/test_arch_detect.py::test_qk_weights_reproduce_the_models_queries_and_keys.
FUSED_PER_HEAD = frozenset(
    {"GPTNeoXAttention", "GPTNeoXJapaneseAttention", "BloomAttention", "PersimmonAttention"}
)

#: Fused projections whose layout is neither [q | k | v] nor per head (CodeGen splits it across model-parallel
#: shards first): their per-head weights are left out of explain-heads rather than misread. Test:
#: tests/base/test_arch_detect.py::test_unreadable_fused_layout_is_left_out_not_misread.
FUSED_UNREADABLE = frozenset({"CodeGenAttention"})

#: Causal-LM heads of models that are not decoder-only: bidirectional encoders run as decoders (BERT and
#: kin) and the decoder halves of encoder-decoder models. lm-interp explains decoder-only LMs.
NOT_DECODER_ONLY = frozenset(
    {
        "bart",
        "bert",
        "bert-generation",
        "big_bird",
        "bigbird_pegasus",
        "blenderbot",
        "blenderbot-small",
        "camembert",
        "data2vec-text",
        "electra",
        "ernie",
        "marian",
        "mbart",
        "megatron-bert",
        "musicgen",
        "musicgen_melody",
        "mvp",
        "pegasus",
        "plbart",
        "prophetnet",
        "rembert",
        "roberta",
        "roberta-prelayernorm",
        "roc_bert",
        "roformer",
        "trocr",
        "whisper",
        "xlm",
        "xlm-roberta",
        "xlm-roberta-xl",
        "xlnet",
        "xmod",
    }
)

#: Decoder-only families lm-interp cannot attribute, and why: a run refuses them up front
#: (`check_attributable`) rather than fail inside the first example's gradient.
NOT_ATTRIBUTABLE: dict[str, str] = {
    "reformer": "its reversible layers recompute activations in a backward pass that runs only in "
    "training mode (dropout on, lengths a multiple of the chunk length): an eval-mode forward has no "
    "gradient",
    "gemma4_assistant": "it is a speculative-decoding draft model: its forward reads the target model's "
    "shared key/value states and scores no text on its own",
    "gemma4_unified_assistant": "it is a speculative-decoding draft model: its forward reads the target "
    "model's shared key/value states and scores no text on its own",
}

_Q_NAMES = ("q_proj", "query", "q", "wq", "Wq", "query_proj", "q_lin", "to_q", "W_q")
_K_NAMES = ("k_proj", "key", "k", "wk", "Wk", "key_proj", "k_lin", "to_k", "W_k")
_FUSED_NAMES = ("qkv_proj", "c_attn", "Wqkv", "query_key_value", "W_pack", "qkv", "wqkv", "att_proj")
_QNORM_NAMES = ("q_norm", "q_layernorm", "query_layernorm", "q_ln", "query_norm")
_KNORM_NAMES = ("k_norm", "k_layernorm", "key_layernorm", "k_ln", "key_norm")
#: Pre-attention norm names (a stack without one has no norm before attention, e.g. OLMo 2).
_INPUT_NORM = re.compile(
    r"^(input_layernorm|ln_1|ln1|ln_attn|attention_norm|attn_norm|input_norm|norm1|norm_1|pre_norm|"
    r"self_attn_layer_norm|pre_attention_layernorm|pre_attn_norm|operator_norm|layer_norm|ln|norm|"
    r"temporal_pre_norm|input_layer_norm|layernorm1|layer_norm1|ln_attn_in)$"
)
_FFN_CLASS = re.compile(r"(mlp|feedforward|feed_forward|ffn|moe|experts?$)", re.IGNORECASE)
_FFN_NAME = re.compile(r"^(mlp|ffn|feed_forward|feedforward|moe|block_sparse_moe|mlps?)$")
_MIXER_CLASS = re.compile(r"(linear|lightning|mamba|delta|ssm|recurrent|rwkv|lstm|mixer)", re.IGNORECASE)
_NOT_FFN_CLASS = re.compile(r"(norm|router|gate$|topk|embedding)", re.IGNORECASE)
_DOWN_NAMES = re.compile(r"(^|[._])(down_proj|down|w2|fc2|c_proj|dense_4h_to_h|wo|fc_out|out_proj|value|v)$")
_INTERFACE_MARK = "ALL_ATTENTION_FUNCTIONS"


class UnsupportedArchitectureError(ValueError):
    """The model's layout could not be found (no decoder layers, an unreadable projection, ...)."""


@dataclass(frozen=True)
class NormConvention:
    """How a norm module scales: ``kind`` ``"rms"`` / ``"layer"``, ``offset`` 1.0 for ``(1 + w)``."""

    kind: str
    offset: float
    has_weight: bool


@dataclass(frozen=True)
class LayerLayout:
    """What `detect` found in one decoder layer (paths relative to the layer)."""

    index: int
    attention: str | None = None
    interface: bool = False
    mixer: str | None = None  # class of a linear-attention / state-space mixer, where there is no attention
    qkv_layout: str | None = None
    q_proj: tuple[str, ...] = ()
    k_proj: tuple[str, ...] = ()
    q_norm: str | None = None
    k_norm: str | None = None
    num_heads: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    mlp: str | None = None
    mlp_parts: tuple[str, ...] = ()  # sibling FFN blocks whose outputs the layer adds (`SummedFFN`)
    down: tuple[
        tuple[str, str], ...
    ] = ()  # (parameter path, orientation: "out_in" | "in_out" | "e_out_in" ...)
    input_norm: str | None = None
    why_no_heads: str | None = None
    why_no_ffn: str | None = None


@dataclass(frozen=True)
class ArchSpec:
    """The model-wide facts callers read (``adapter.spec``): the family and the input norm's convention."""

    family: str
    layers: str
    norm_type: str | None = "rms"
    norm_weight_offset: float = 0.0
    embed_scale: float = 1.0
    model_class: str = ""
    final_norm: str | None = None  # the norm between the last layer's residual and the output head


def check_attributable(model: nn.Module) -> None:
    """Refuse a model of a family in `NOT_ATTRIBUTABLE`, naming the family and the reason.

    Raises:
        UnsupportedArchitectureError: for such a model.
    """
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    if model_type in NOT_ATTRIBUTABLE:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} ({model_type!r}) cannot be attributed: {NOT_ATTRIBUTABLE[model_type]}"
        )


def supported_families() -> list[str]:
    """The decoder-only families whose tiny models pass every check (see `lm_interp_plugin.support`)."""
    from .support import SUPPORTED_FAMILIES

    return list(SUPPORTED_FAMILIES)


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


def _text_config(model: nn.Module):
    config = model.config
    get_text = getattr(config, "get_text_config", None)
    if not callable(get_text):
        return config
    try:
        return get_text(decoder=True)
    except (ValueError, TypeError):
        return config


def _cfg(config, *names, default=None):
    """The first of `names` that `config` has as a plain value (per-layer attributes that raise: skipped)."""
    for name in names:
        try:
            value = getattr(config, name, None)
        except Exception:  # per-layer attributes refuse global access
            value = None
        if value is not None:
            return value
    return default


_SOURCE_CACHE: dict[type, bool] = {}


def _calls_interface(module: nn.Module) -> bool:
    """Whether the module's class forward dispatches through transformers' attention registry."""
    cls = type(module)
    if cls not in _SOURCE_CACHE:
        try:
            source = inspect.getsource(cls.forward)
        except (OSError, TypeError):
            source = ""
        _SOURCE_CACHE[cls] = _INTERFACE_MARK in source
    return _SOURCE_CACHE[cls]


def _weight_2d(module: nn.Module) -> tuple[Tensor, bool] | None:
    """``(weight [out, in], transposed)`` of a Linear-like module, or None."""
    w = getattr(module, "weight", None)
    if not isinstance(w, Tensor) or w.dim() != 2:
        return None
    if type(module).__name__ == "Conv1D":  # transformers' Conv1D stores [in, out]
        return w, True
    if isinstance(module, nn.Embedding) or "Norm" in type(module).__name__:
        return None
    return w, False


def _outermost(found: list[str]) -> list[str]:
    return [p for p in found if not any(p != o and p.startswith(o + ".") for o in found)]


def _norm_convention(norm: nn.Module, d: int) -> NormConvention | None:
    """The norm's convention, found by evaluating it on a seeded input against each candidate formula."""
    weight = getattr(norm, "weight", None)
    bias = getattr(norm, "bias", None)
    if weight is not None and (not isinstance(weight, Tensor) or weight.dim() != 1):
        return None
    size = int(weight.numel()) if weight is not None else d
    gen = torch.Generator().manual_seed(0)
    ref = next((p for p in norm.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    if device.type == "meta":  # a model built without weights (`lm-interp doctor`): no value to evaluate
        return None
    x = torch.randn(3, size, generator=gen).to(device=device, dtype=dtype)
    try:
        with torch.no_grad():
            y = norm(x).float()
    except Exception:  # a norm with another signature: not readable
        return None
    xf = x.float()
    rms = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)
    centred = xf - xf.mean(-1, keepdim=True)
    layer = centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-6)
    w = weight.detach().float() if weight is not None else None
    b = bias.detach().float() if isinstance(bias, Tensor) else 0.0
    tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-3
    for kind, base in (("rms", rms), ("layer", layer)):
        for offset in (0.0, 1.0) if w is not None else (0.0,):
            expect = base * (w + offset) + b if w is not None else base + b
            if torch.allclose(y, expect, atol=tol * (1 + float(expect.abs().max())), rtol=tol):
                return NormConvention(kind, offset, w is not None)
    return None


def _find_layers(model: nn.Module, text) -> tuple[str, nn.ModuleList]:
    """The decoder layer list. Not read, on purpose: stacks whose layer is not one attention and one FFN
    (LongCat-Flash: ``num_hidden_layers`` counts two attention sublayers per layer, each layer also holds two
    dense MLPs at different residual points and a shortcut MoE; BLT's byte encoder / latent / decoder stacks):
    no list has the config's depth, and they keep attribution (eager attention where it returns weights)."""
    depth = _cfg(text, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    towers = re.compile(r"(vision|visual|audio|image|encoder|patcher|vq|mtp|speech)", re.IGNORECASE)
    candidates = [(n, m) for n, m in lists if depth is not None and len(m) == depth]
    if not candidates:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: no nn.ModuleList of {depth} decoder layers "
            f"(config num_hidden_layers). Module lists seen: "
            f"{', '.join(f'{n} ({len(m)})' for n, m in lists[:12]) or 'none'}. Module names seen: "
            f"{_seen_module_names(model)}. Fix: load the causal LM itself, or report this message."
        )
    # a language model's layers before a vision/audio tower's of the same depth (composite checkpoints)
    candidates.sort(
        key=lambda nm: (bool(towers.search(nm[0])), "language_model" not in nm[0], nm[0].count("."), nm[0])
    )
    return candidates[0]


def _find_final_norm(model: nn.Module, layers_path: str) -> str | None:
    """The norm that the decoder applies after its last layer: the last norm-like child of the module that
    holds the layer list (``model.norm``, ``transformer.ln_f``, ``gpt_neox.final_layer_norm``), or None."""
    parent_path = layers_path.rsplit(".", 1)[0] if "." in layers_path else ""
    parent = model.get_submodule(parent_path) if parent_path else model
    found = [
        name
        for name, child in parent.named_children()
        if isinstance(child, nn.LayerNorm) or "norm" in type(child).__name__.lower()
    ]
    if not found:
        return None
    return f"{parent_path}.{found[-1]}" if parent_path else found[-1]


def _qk_layout(attn: nn.Module, text, d: int) -> dict:
    """Query/key projection facts of one attention module (relative paths), or ``why_no_heads``."""
    children = dict(attn.named_children())
    nh = int(_cfg(attn, "num_heads", "num_attention_heads", default=0) or _cfg(text, "num_attention_heads"))
    hd = _cfg(attn, "head_dim", "attention_head_size", "head_size")
    if not isinstance(hd, int):
        hd = _cfg(text, "head_dim") if isinstance(_cfg(text, "head_dim"), int) else d // nh
    groups = _cfg(attn, "num_key_value_groups", "num_kv_groups")
    nkv = int(_cfg(attn, "num_key_value_heads", "num_kv_heads", default=0) or 0)
    if not nkv:
        nkv = (
            nh // groups
            if isinstance(groups, int) and groups
            else int(_cfg(text, "num_key_value_heads", default=nh))
        )
    out: dict = {"num_heads": nh, "num_kv_heads": nkv, "head_dim": int(hd)}
    out["q_norm"] = next((n for n in _QNORM_NAMES if n in children), None)
    out["k_norm"] = next((n for n in _KNORM_NAMES if n in children), None)
    if ("kv_a_proj_with_mqa" in children and "kv_b_proj" in children) or "q_a_proj" in children:
        out["qkv_layout"] = "latent"
        if not ("q_b_proj" in children or "q_proj" in children) or "kv_b_proj" not in children:
            out["why_no_heads"] = (
                f"latent attention {type(attn).__name__} without q_b_proj/q_proj and kv_b_proj (its query is "
                "not a composition of linear maps lm-interp reads)"
            )
        return out
    q = next((n for n in _Q_NAMES if n in children and _weight_2d(children[n])), None)
    k = next((n for n in _K_NAMES if n in children and _weight_2d(children[n])), None)
    if q and k:
        wq, tq = _weight_2d(children[q])
        wk, tk = _weight_2d(children[k])
        q_in = wq.shape[0] if tq else wq.shape[1]
        if q_in != d:
            out["why_no_heads"] = f"the query projection reads {q_in}-wide inputs, not the d_model={d} stream"
            return out
        q_out = wq.shape[1] if tq else wq.shape[0]
        k_out = wk.shape[1] if tk else wk.shape[0]
        hd = int(hd)
        if k_out % hd or q_out % hd:
            out["why_no_heads"] = f"q/k widths {q_out}/{k_out} are not multiples of head_dim {hd}"
            return out
        nkv = k_out // hd
        if q_out == 2 * nh * hd:
            out["qkv_layout"] = "gated"
        else:
            nh = q_out // hd
            out["qkv_layout"] = "separate"
        out.update(num_heads=nh, num_kv_heads=nkv, q_proj=(q,), k_proj=(k,))
        return out
    fused = next((n for n in _FUSED_NAMES if n in children and _weight_2d(children[n])), None)
    if fused:
        w, transposed = _weight_2d(children[fused])
        width = w.shape[1] if transposed else w.shape[0]
        if type(attn).__name__ in FUSED_UNREADABLE:
            out["why_no_heads"] = f"{type(attn).__name__}'s fused q/k/v layout is not read by lm-interp"
        elif type(attn).__name__ in FUSED_PER_HEAD:
            out["qkv_layout"] = "per_head_interleaved"
            if width != 3 * nh * hd:
                out["why_no_heads"] = f"fused q/k/v width {width} is not 3 x {nh} heads x {hd}"
        elif width == (nh + 2 * nkv) * hd:
            out["qkv_layout"] = "concat_conv1d" if transposed else "concat"
        else:
            out["why_no_heads"] = (
                f"fused q/k/v projection {fused!r} of width {width} matches no known layout for {nh} query "
                f"/ {nkv} key-value heads of size {hd}"
            )
        out["q_proj"] = out["k_proj"] = (fused,)
        return out
    out["why_no_heads"] = (
        f"no query/key projection found among {type(attn).__name__}'s children ({', '.join(children)})"
    )
    return out


def _down_params(mlp: nn.Module, d: int) -> tuple[tuple[str, str], ...]:
    """Every down projection inside an FFN block, with its weight's orientation (see `_value_vectors`)."""
    found: list[tuple[str, str, bool]] = []
    for name, p in mlp.named_parameters():
        leaf = name.rsplit(".", 1)
        owner = mlp.get_submodule(leaf[0]) if len(leaf) == 2 else mlp
        pname = leaf[-1]
        if p.dim() == 2 and pname == "weight":
            got = _weight_2d(owner)
            if got is None:
                continue
            w, transposed = got
            out_dim, in_dim = (w.shape[1], w.shape[0]) if transposed else (w.shape[0], w.shape[1])
            if out_dim == d:
                path = leaf[0] if len(leaf) == 2 else ""
                named = bool(_DOWN_NAMES.search("." + path)) if path else False
                found.append((name, "in_out" if transposed else "out_in", named or in_dim != d))
        elif p.dim() == 2 and pname != "weight" and d in p.shape and _DOWN_NAMES.search("." + name):
            # experts stacked in one 2-D parameter ([E * d_ff, d_model], DBRX's w2, sliced per expert): only
            # the name tells it from the up projections of the same shape; its columns/rows are per-expert
            # value vectors either way
            found.append((name, "in_out" if p.shape[1] == d and p.shape[0] != d else "out_in", True))
        elif p.dim() == 3 and d in p.shape[1:]:
            named = bool(re.search(r"(down|w2|wo|out)", name))
            if p.shape[1] == d and p.shape[2] != d:
                orient = "e_out_in"
            elif p.shape[2] == d and p.shape[1] != d:
                orient = "e_in_out"
            else:  # d_ff == d_model: transformers' experts store [E, out, in] unless marked transposed
                orient = "e_in_out" if getattr(owner, "is_transposed", False) else "e_out_in"
            found.append((name, orient, named))
    named = [
        f
        for f in found
        if _DOWN_NAMES.search("." + f[0].rsplit(".", 1)[0]) or re.search(r"(down|w2|output)", f[0])
    ]
    chosen = named or [f for f in found if f[2]]
    return tuple((n, o) for n, o, _ in chosen)


@dataclass(frozen=True)
class ArchAdapter:
    """Uniform access to one loaded model through the layout `detect` found."""

    model: nn.Module
    spec: ArchSpec
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    layouts: tuple[LayerLayout, ...] = field(default=(), repr=False)

    # -- what each layer holds -----------------------------------------------------------------------------
    @property
    def attention_layers(self) -> list[int]:
        """Model layer indices with softmax attention (through the interface or not)."""
        return [lay.index for lay in self.layouts if lay.attention is not None]

    @property
    def probe_layers(self) -> list[int]:
        """Model layer indices whose attention goes through transformers' AttentionInterface."""
        return [lay.index for lay in self.layouts if lay.attention is not None and lay.interface]

    @property
    def head_layers(self) -> list[int]:
        """Model layer indices whose per-head query/key weights are readable (explain-heads)."""
        return [lay.index for lay in self.layouts if lay.attention is not None and lay.why_no_heads is None]

    @property
    def ffn_layers(self) -> list[int]:
        """Model layer indices with an FFN whose value vectors are readable: the layers FFN concepts cover
        (a hybrid's mixer-only or attention-only layers have none; their indices are skipped, never
        renumbered)."""
        return [lay.index for lay in self.layouts if lay.mlp is not None and lay.down]

    def linear_layers(self) -> dict[int, str]:
        """Model layer index -> mixer class of the layers without softmax attention (linear, SSM)."""
        return {lay.index: lay.mixer or "none" for lay in self.layouts if lay.attention is None}

    def ffn_missing(self) -> str | None:
        """Why FFN concepts do not apply to this model, or None: a layer holds an FFN that cannot be read
        (an unread part would make the layer's concepts wrong), or no layer has an FFN. Layers without any
        FFN block (Nemotron-H's mixer and attention layers) are left out of `ffn_layers`, not a reason."""
        unreadable = [lay for lay in self.layouts if lay.why_no_ffn is not None or (lay.mlp and not lay.down)]
        if unreadable:
            lay = unreadable[0]
            return (
                f"{len(unreadable)} of {self.num_layers} layers have an FFN lm-interp cannot read "
                f"(layer {lay.index}: {lay.why_no_ffn or 'no down projection to d_model'})"
            )
        if not self.ffn_layers:
            return f"none of the {self.num_layers} layers has an MLP / feed-forward / MoE block"
        return None

    # -- modules ---------------------------------------------------------------------------------------------
    def layers(self) -> list[nn.Module]:
        """The decoder layers, in order."""
        return list(self.model.get_submodule(self.spec.layers))

    def _layout(self, layer: int) -> LayerLayout:
        if not 0 <= layer < self.num_layers:
            raise IndexError(
                f"layer {layer} out of range: the model has {self.num_layers} layers "
                f"(0..{self.num_layers - 1})"
            )
        return self.layouts[layer]

    def _get(self, layer: int, path: str | None, what: str) -> nn.Module:
        lay = self._layout(layer)
        if path is None:
            kinds = self.linear_layers().get(layer)
            raise UnsupportedArchitectureError(
                f"layer {layer} of {type(self.model).__name__} has no {what}"
                + (f" (its mixer is {kinds})" if kinds else "")
                + f"; layers with attention: {self.attention_layers}, with an FFN: {self.ffn_layers}. "
                f"{lay.why_no_heads or lay.why_no_ffn or ''}".rstrip()
            )
        return self.layers()[layer].get_submodule(path) if path else self.layers()[layer]

    def attention_module(self, layer: int) -> nn.Module:
        """The attention module of `layer` (its input is the input-normed hidden state)."""
        return self._get(layer, self._layout(layer).attention, "softmax attention")

    def module_path(self, layer: int, part: str) -> str:
        """The dotted path from the model's root of `layer`'s ``"attention"`` or ``"ffn"`` (sibling FFN blocks
        read as one `SummedFFN`, which is no module of the model, joined with '+'), for reports such as
        doctor's."""
        lay = self._layout(layer)
        inner = {"attention": lay.attention, "ffn": lay.mlp}[part]
        if inner is None:
            raise UnsupportedArchitectureError(f"layer {layer} of {type(self.model).__name__} has no {part}")
        return f"{self.spec.layers}.{layer}" + (f".{inner}" if inner else "")

    def mlp_module(self, layer: int) -> nn.Module:
        """The FFN module of `layer`; its forward output is the FFN output (before any post-MLP norm). Sibling
        FFN blocks (routed experts beside a shared MLP) come as one `SummedFFN`."""
        lay = self._layout(layer)
        if lay.mlp_parts:
            block = self.layers()[layer]
            return SummedFFN({part: block.get_submodule(part) for part in lay.mlp_parts})
        return self._get(layer, lay.mlp, "FFN")

    def final_norm_module(self) -> nn.Module:
        """The norm between the last layer's residual and the output projection (what the logit lens applies
        to every layer's residual)."""
        if self.spec.final_norm is None:
            raise UnsupportedArchitectureError(
                f"{type(self.model).__name__}: no final norm beside the decoder layers at "
                f"{self.spec.layers!r} (the logit lens needs it). Module names seen: "
                f"{_seen_module_names(self.model)}"
            )
        return self.model.get_submodule(self.spec.final_norm)

    def output_head_module(self) -> nn.Module:
        """The output projection (LM head): residual after the final norm -> logits."""
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if head is None:
            raise UnsupportedArchitectureError(
                f"{type(self.model).__name__} has no output embeddings (get_output_embeddings): no logit lens"
            )
        return head

    # -- embeddings ------------------------------------------------------------------------------------------
    def input_embedding_matrix(self) -> Tensor:
        """Input token embeddings ``[vocab, d_model]``, unscaled (see `embedding_scale`)."""
        return self.model.get_input_embeddings().weight.detach()

    def output_embedding_matrix(self) -> Tensor:
        """Output (unembedding) matrix ``[vocab, d_model]``; the input embeddings when tied."""
        head = self.model.get_output_embeddings()
        if head is None or getattr(head, "weight", None) is None:
            return self.input_embedding_matrix()
        return head.weight.detach()

    def embedding_scale(self) -> float:
        """The factor the model multiplies token embeddings by before the first layer."""
        return self.spec.embed_scale

    # -- per-layer weights -----------------------------------------------------------------------------------
    def _input_norm(self, layer: int) -> nn.Module | None:
        path = self._layout(layer).input_norm
        return None if path is None else self.layers()[layer].get_submodule(path)

    def input_norm_weight(self, layer: int) -> Tensor | None:
        """Effective multiplicative weight ``[d_model]`` of the pre-attention norm (Gemma: 1 + w).

        ``None`` for a norm without a learned weight, or no norm before attention.
        """
        norm = self._input_norm(layer)
        weight = getattr(norm, "weight", None) if norm is not None else None
        if weight is None:
            return None
        return weight.detach() + self.spec.norm_weight_offset

    def input_norm_bias(self, layer: int) -> Tensor | None:
        """Additive bias ``[d_model]`` of the pre-attention norm (LayerNorm families), else ``None``."""
        norm = self._input_norm(layer)
        bias = getattr(norm, "bias", None) if norm is not None else None
        return bias.detach() if isinstance(bias, Tensor) else None

    def qk_head_norm_weights(self, layer: int) -> tuple[Tensor | None, Tensor | None]:
        """Effective weights of the q/k norms applied after projection: ``[head_dim]`` per head (Qwen3) or
        ``[heads, head_dim]`` for a norm over the whole projection (OLMo 2; key heads expanded); else None."""
        lay = self._layout(layer)
        attn = self.attention_module(layer)
        out: list[Tensor | None] = []
        for path, heads in ((lay.q_norm, lay.num_heads), (lay.k_norm, lay.num_kv_heads)):
            norm = attn.get_submodule(path) if path else None
            w = getattr(norm, "weight", None) if norm is not None else None
            if w is None:
                out.append(None)
                continue
            conv = _norm_convention(norm, w.numel())
            w = w.detach() + (conv.offset if conv else 0.0)
            if w.numel() == heads * lay.head_dim and w.numel() != lay.head_dim:
                w = w.reshape(heads, lay.head_dim)
                if heads != lay.num_heads:
                    w = w.repeat_interleave(lay.num_heads // heads, dim=0)
            out.append(w)
        return out[0], out[1]

    def qk_weights(self, layer: int) -> tuple[Tensor, Tensor]:
        """Per-head query and key weights as applied to the normed hidden state (biases ignored).

        Returns:
            ``(Wq, Wk)``, both ``[num_heads, head_dim, d_model]``; key heads of grouped-query attention are
            repeated so that query head h pairs with key head ``h // (num_heads // num_kv_heads)``. Latent
            attention: the composed low-rank maps (inner norm weight folded in, its per-token scale not).
        """
        lay = self._layout(layer)
        attn = self.attention_module(layer)
        if lay.why_no_heads is not None:
            raise UnsupportedArchitectureError(f"layer {layer}: {lay.why_no_heads}")
        nh, nkv, hd, d = lay.num_heads, lay.num_kv_heads, lay.head_dim, self.hidden_size

        def weight(path: str) -> Tensor:
            w, transposed = _weight_2d(attn.get_submodule(path))
            return (w.t() if transposed else w).detach()

        if lay.qkv_layout == "latent":
            return _latent_qk(attn, d)
        if lay.qkv_layout in ("separate", "gated"):
            wq, wk = weight(lay.q_proj[0]), weight(lay.k_proj[0])
            if lay.qkv_layout == "gated":
                wq = wq.reshape(nh, 2 * hd, d)[:, :hd].reshape(nh * hd, d)
        else:
            w = weight(lay.q_proj[0])
            if lay.qkv_layout == "per_head_interleaved":
                per_head = w.reshape(nh, 3, hd, d)
                wq, wk = per_head[:, 0].reshape(nh * hd, d), per_head[:, 1].reshape(nh * hd, d)
                nkv = nh
            else:
                wq, wk = w[: nh * hd], w[nh * hd : nh * hd + nkv * hd]
        wq = wq.reshape(nh, hd, d)
        wk = wk.reshape(nkv, hd, d)
        if nkv != nh:
            wk = wk.repeat_interleave(nh // nkv, dim=0)
        return wq, wk

    def down_proj_weight(self, layer: int) -> Tensor:
        """FFN value vectors ``[d_model, d_ff]`` (columns): the down projection's, or for an MoE block every
        routed expert's then every shared expert's columns side by side."""
        lay = self._layout(layer)
        mlp = self.mlp_module(layer)
        if not lay.down:
            raise UnsupportedArchitectureError(f"layer {layer}: {lay.why_no_ffn or 'no FFN down projection'}")
        parts = [_value_vectors(mlp.get_parameter(path).detach(), orient) for path, orient in lay.down]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def down_proj_bias(self, layer: int) -> Tensor | None:
        """Bias ``[d_model]`` of a single dense down projection, or ``None`` (MoE: none is one vector)."""
        lay = self._layout(layer)
        if len(lay.down) != 1 or lay.down[0][1] not in ("out_in", "in_out"):
            return None
        path = lay.down[0][0].rsplit(".", 1)[0] if "." in lay.down[0][0] else ""
        owner = self.mlp_module(layer).get_submodule(path) if path else self.mlp_module(layer)
        bias = getattr(owner, "bias", None)
        return bias.detach() if isinstance(bias, Tensor) else None


def _value_vectors(w: Tensor, orient: str) -> Tensor:
    """``d_model x n`` columns of a down-projection weight stored in `orient`."""
    if orient == "out_in":
        return w
    if orient == "in_out":
        return w.t()
    if orient == "e_out_in":  # [E, d_model, d_ff]
        return w.permute(1, 0, 2).reshape(w.shape[1], -1)
    return w.permute(2, 0, 1).reshape(w.shape[2], -1)  # [E, d_ff, d_model]


def _latent_qk(attn: nn.Module, d: int) -> tuple[Tensor, Tensor]:
    """Per-head q and k maps of multi-head latent attention, as matrices on the normed hidden state."""

    def lin(name: str) -> Tensor:
        return attn.get_submodule(name).weight.detach().float()

    def folded(norm_name: str) -> Tensor | None:
        norm = getattr(attn, norm_name, None)
        w = getattr(norm, "weight", None)
        if w is None:
            return None
        conv = _norm_convention(norm, w.numel())
        return w.detach().float() + (conv.offset if conv else 0.0)

    nh = int(_cfg(attn, "num_heads", default=0) or attn.config.num_attention_heads)
    nope = int(attn.qk_nope_head_dim)
    rope = int(attn.qk_rope_head_dim)
    v_dim = int(attn.v_head_dim)
    rank = int(attn.kv_lora_rank)
    if isinstance(getattr(attn, "q_a_proj", None), nn.Module):
        wq = lin("q_b_proj") @ (_scale_rows(lin("q_a_proj"), folded("q_a_layernorm")))
    else:
        wq = lin("q_proj")
    wq = wq.reshape(nh, nope + rope, d)
    kv_a = lin("kv_a_proj_with_mqa")  # [rank + rope, d]
    latent = _scale_rows(kv_a[:rank], folded("kv_a_layernorm"))
    k_nope = lin("kv_b_proj").reshape(nh, nope + v_dim, rank)[:, :nope] @ latent  # nh x nope x d
    k_rope = kv_a[rank:].unsqueeze(0).expand(nh, rope, d)
    return wq, torch.cat([k_nope, k_rope], dim=1)


def _scale_rows(w: Tensor, scale: Tensor | None) -> Tensor:
    return w if scale is None else w * scale[:, None]


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _embedding_scale(model: nn.Module, layers: nn.ModuleList) -> float:
    """The factor between the embedding rows and the first layer's input, from one two-token forward
    (1.0 when the input is not a multiple of the embedding, e.g. with position embeddings added)."""
    embed = model.get_input_embeddings()
    if embed.weight.is_meta:  # a model built without weights (`lm-interp doctor`): the scale is unknown
        return float("nan")
    scale = getattr(embed, "embed_scale", None)
    if scale is not None:
        return float(scale)
    seen: dict[str, Tensor] = {}

    def pre(_module, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states")
        if isinstance(x, Tensor):
            seen["x"] = x.detach()
        raise _Stop

    weight = embed.weight
    ids = torch.tensor([[3, 4]], device=weight.device)
    handle = layers[0].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=ids)
    except _Stop:
        pass
    except Exception as err:
        logger.debug("embedding scale: forward failed (%s); assuming 1.0", err)
    finally:
        handle.remove()
    x = seen.get("x")
    if x is None or tuple(x.shape[:2]) != (1, 2) or x.dim() != 3 or x.shape[-1] != weight.shape[1]:
        return 1.0  # another layout of the layer input (e.g. several streams): no single scale to read
    e = weight[ids[0]].detach().float()
    h = x[0, :2].float()
    s = float((h * e).sum() / (e * e).sum().clamp_min(1e-30))
    if float((h - s * e).norm()) > 1e-3 * float(h.norm()) or abs(s - 1.0) < 1e-6:
        return 1.0
    return s


class _Stop(Exception):
    """Stops the scale-finding forward at the first layer."""


def detect(model: nn.Module) -> ArchAdapter:
    """Find the layout of a loaded Hugging Face causal LM (cached per model object).

    Raises:
        UnsupportedArchitectureError: naming what was not found and the module names seen; any other
            failure while reading the modules is reported as this error too (a refusal, never a crash).
    """
    cached = _CACHE.get(model)
    if cached is not None:
        return cached
    try:
        adapter = _detect(model)
    except UnsupportedArchitectureError:
        raise
    except Exception as err:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: reading its layout failed ({type(err).__name__}: {err}). Module names "
            f"seen: {_seen_module_names(model)}"
        ) from err
    _CACHE[model] = adapter
    return adapter


def _detect(model: nn.Module) -> ArchAdapter:
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no .config; pass a Hugging Face PreTrainedModel"
        )
    text = _text_config(model)
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embed, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no input embedding matrix (get_input_embeddings). Modules seen: "
            f"{_seen_module_names(model)}"
        )
    d = int(weight.shape[1])
    layers_path, layers = _find_layers(model, text)
    prefix = type(model).__name__.split("For", 1)[0]
    layouts = [_layer_layout(i, layer, text, d, prefix) for i, layer in enumerate(layers)]
    if not any(lay.attention or lay.mixer or lay.mlp for lay in layouts):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: the decoder layers at {layers_path!r} hold no attention, mixer or FFN "
            f"lm-interp can read. Module names seen: {_seen_module_names(model)}"
        )
    first = next((lay for lay in layouts if lay.attention is not None and lay.why_no_heads is None), None)
    first_any = first or next((lay for lay in layouts if lay.attention is not None), None)
    conv = None
    norm_layer = first_any or layouts[0]
    if norm_layer.input_norm is not None:
        conv = _norm_convention(layers[norm_layer.index].get_submodule(norm_layer.input_norm), d)
    nh = first_any.num_heads if first_any else int(_cfg(text, "num_attention_heads", default=0) or 0)
    spec = ArchSpec(
        family=str(getattr(text, "model_type", None) or getattr(config, "model_type", "")),
        layers=layers_path,
        norm_type=None if conv is None else conv.kind,
        norm_weight_offset=0.0 if conv is None else conv.offset,
        embed_scale=_embedding_scale(model, layers),
        model_class=type(model).__name__,
        final_norm=_find_final_norm(model, layers_path),
    )
    adapter = ArchAdapter(
        model=model,
        spec=spec,
        num_layers=len(layers),
        num_heads=nh,
        num_kv_heads=first_any.num_kv_heads if first_any else nh,
        head_dim=first_any.head_dim if first_any else (d // nh if nh else 0),
        hidden_size=d,
        layouts=tuple(layouts),
    )
    return adapter


def _role(module: nn.Module, prefix: str) -> str:
    """The class name without the family's prefix (``Qwen3_5MoeGatedDeltaNet`` -> ``GatedDeltaNet``), so that
    a family called "...Moe" does not make every module look like an MoE block."""
    name = type(module).__name__
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


def _layer_layout(index: int, layer: nn.Module, text, d: int, prefix: str = "") -> LayerLayout:
    named = list(layer.named_modules())
    interface = _outermost([n for n, m in named if n and _calls_interface(m)])
    fields: dict = {"index": index}
    attention_like = [
        n for n, m in named if n and re.search(r"attention|attn", type(m).__name__, re.IGNORECASE)
    ]
    if interface:
        fields.update(attention=interface[0], interface=True)
        if len(interface) > 1:
            fields["why_no_heads"] = (
                f"{len(interface)} attention modules in one layer ({', '.join(interface)})"
            )
    else:
        softmax = _outermost(
            [
                n
                for n in attention_like
                if not _MIXER_CLASS.search(_role(layer.get_submodule(n), prefix))
                and _qk_layout(layer.get_submodule(n), text, d).get("qkv_layout")
            ]
        )
        if softmax:
            fields.update(attention=softmax[0], interface=False)
        else:
            mixers = [n for n, m in layer.named_children() if not _FFN_CLASS.search(_role(m, prefix))]
            mixers = [n for n in mixers if "norm" not in type(layer.get_submodule(n)).__name__.lower()]
            fields["mixer"] = type(layer.get_submodule(mixers[0])).__name__ if mixers else None
    if fields.get("attention") is not None:
        attn = layer.get_submodule(fields["attention"])
        qk = _qk_layout(attn, text, d)
        why = fields.get("why_no_heads") or qk.pop("why_no_heads", None)
        fields.update({k: v for k, v in qk.items() if k != "why_no_heads"}, why_no_heads=why)
    inside_attention = fields.get("attention")
    norms_inside = [n for n, m in named if n and "norm" in type(m).__name__.lower()]
    ffn = [
        n
        for n, m in named
        if n
        and not any(n.startswith(o + ".") for o in norms_inside)
        and (_FFN_CLASS.search(_role(m, prefix)) or _FFN_NAME.match(n.rsplit(".", 1)[-1]))
        and not _NOT_FFN_CLASS.search(_role(m, prefix))
        and not _MIXER_CLASS.search(_role(m, prefix))
        and not (inside_attention and (n == inside_attention or n.startswith(inside_attention + ".")))
    ]
    ffn = _outermost(ffn)
    block = ffn[0].split(".", 1)[0] if len(ffn) == 1 and "." in ffn[0] else None
    projected = [
        n
        for n, m in layer.named_children()
        if n != block and isinstance(m, nn.Linear) and m.out_features == d
    ]
    if block and inside_attention and inside_attention.startswith(block + ".") and projected:
        # Zamba's shared transformer block: its FFN writes the block's own stream, which the layer maps by
        # `linear` before its residual; the value vectors are not residual-stream directions
        fields["why_no_ffn"] = (
            f"the FFN {ffn[0]} writes a nested block's stream, mapped by {projected[0]!r} before the residual"
        )
    elif len(ffn) == 1:
        down = _down_params(layer.get_submodule(ffn[0]), d)
        fields.update(mlp=ffn[0], down=down)
        if not down:
            fields["why_no_ffn"] = (
                f"no down projection to d_model={d} inside {type(layer.get_submodule(ffn[0])).__name__}"
            )
    elif len(ffn) > 1:
        fields.update(_sibling_ffn(layer, ffn, d))
    else:  # the FFN written inline in the layer (fc1/fc2 children, OPT/BioGPT): the down projection's output
        inline = [
            n
            for n, m in layer.named_children()
            if n != inside_attention and _DOWN_NAMES.search("." + n) and _weight_2d(m) is not None
        ]
        if len(inline) == 1:
            down = _down_params(layer.get_submodule(inline[0]), d)
            if down:
                fields.update(mlp=inline[0], down=down)
    norms = [n for n, m in layer.named_children() if "norm" in type(m).__name__.lower() or "norm" in n]
    fields["input_norm"] = next((n for n in norms if _INPUT_NORM.match(n)), None)
    return LayerLayout(**fields)


def _sibling_ffn(layer: nn.Module, ffn: list[str], d: int) -> dict:
    """Layout fields of a layer with several FFN blocks: routed experts beside one dense MLP, both children
    of the layer (Granite-MoE-Hybrid's ``block_sparse_moe`` + ``shared_mlp``), are read as one MoE block with
    a shared expert (the layer adds their outputs, as every shared-expert MoE does inside its block); any
    other combination is left out with its reason."""
    downs = {name: _down_params(layer.get_submodule(name), d) for name in ffn}
    routed = [n for n in ffn if any(o.startswith("e_") for _, o in downs[n])]
    dense = [n for n in ffn if len(downs[n]) == 1 and downs[n][0][1] in ("out_in", "in_out")]
    if len(ffn) == 2 and all("." not in n for n in ffn) and len(routed) == 1 and len(dense) == 1:
        parts = (routed[0], dense[0])
        down = tuple((f"{part}.{path}", orient) for part in parts for path, orient in downs[part])
        return {"mlp": "+".join(parts), "mlp_parts": parts, "down": down}
    return {"why_no_ffn": f"{len(ffn)} FFN blocks in one layer ({', '.join(ffn)})"}


class SummedFFN(nn.Module):
    """Sibling FFN blocks of one layer, seen as one FFN: its forward is the sum of theirs, and a forward hook
    registered on it fires once per model forward with the summed output (after the last part ran), so that
    every FFN reader (probe, capture, validity) reads the layer's whole FFN output. Hooks observe only."""

    def __init__(self, parts: dict[str, nn.Module]):
        super().__init__()
        for name, module in parts.items():
            self.add_module(name, module)

    def forward(self, *args, **kwargs):
        outputs = [m(*args, **kwargs) for m in self.children()]
        return sum(o[0] if isinstance(o, tuple) else o for o in outputs)

    def register_forward_hook(self, hook, *args, **kwargs):  # type: ignore[override]
        parts = list(self.children())
        pending: dict[int, tuple[tuple, Tensor]] = {}

        def part_hook(index: int):
            def observe(_module: nn.Module, inputs: tuple, output) -> None:
                pending[index] = (inputs, output[0] if isinstance(output, tuple) else output)
                if len(pending) == len(parts):
                    total = sum(pending[i][1] for i in range(len(parts)))
                    first_inputs = pending[0][0]
                    pending.clear()
                    if hook(self, first_inputs, total) is not None:
                        raise UnsupportedArchitectureError(
                            "a hook on a SummedFFN returned a replacement output; sibling FFN blocks can "
                            "only be observed"
                        )

            return observe

        return _Handles([m.register_forward_hook(part_hook(i), *args, **kwargs) for i, m in enumerate(parts)])


class _Handles:
    """The removable handles of one `SummedFFN` hook, removed together."""

    def __init__(self, handles: list):
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def get_adapter(model: nn.Module) -> ArchAdapter:
    """The `ArchAdapter` of a loaded Hugging Face causal LM (see `detect`); raises
    `UnsupportedArchitectureError` naming the modules seen when no layout is found."""
    return detect(model)
