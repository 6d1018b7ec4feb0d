"""`lm-interp doctor MODEL`: what lm-interp finds in a model and what it will compute on it, before any run.

A user who brings a model wants to know, without running a task, whether its instruction attention goes
through the per-layer probe or the eager fallback, whether it gets FFN concepts, and whether
``explain-heads`` / ``explain-ffn`` accept it. The model is built from its config on the ``meta`` device (no
weights read, no memory), so a 70B checkpoint is diagnosed as fast as a tiny one; only a GGUF file's
metadata is read.

What the architecture detector found comes from `arch` alone, through `arch_findings` (the one function that
asks it); what each metric family needs is decided here from those findings, by the same rule the pass uses:
the probe, FFN concepts and the global explanations need the adapter; attribution and ablation need only the
input embeddings.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import metric_names as names
from ..arch import UnsupportedArchitectureError, get_adapter
from .loading import model_source

logger = logging.getLogger(__name__)


@dataclass
class LayerFinding:
    """What the detector found in one decoder layer (module paths are the model's own names)."""

    index: int
    layer_type: str | None  # config.layer_types[index] when the config has it (sliding / full / linear ...)
    attention: str
    heads: str  # "9 query heads, 3 key heads, head_dim 64"
    qk_norm: bool  # per-head q/k norms after the projection
    input_norm: str  # "rms", "rms (1 + w)", "layer", "layer (no weight)"
    ffn: str
    ffn_shape: str  # the down projection, "d_model x d_ff"


@dataclass
class ArchFindings:
    """`arch`'s view of a model: its family row and per-layer findings, or why nothing resolved."""

    family: str | None
    layers: list[LayerFinding] = field(default_factory=list)
    error: str | None = None
    ffn_missing: str | None = None  # why FFN concepts / explain-ffn do not apply (`ArchAdapter.ffn_missing`)
    heads_missing: str | None = None  # why explain-heads does not apply (no layer with readable q/k weights)


@dataclass
class MetricVerdict:
    """One metric family: whether the model gets it, and how or why not."""

    family: str
    metrics: list[str]
    available: bool
    how: str


@dataclass
class Diagnosis:
    """Everything `lm-interp doctor` prints (also as JSON with ``--json``)."""

    model: str
    model_class: str
    model_type: str | None
    attn_implementation: str | None
    num_layers: int | None
    findings: ArchFindings
    verdicts: list[MetricVerdict]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def arch_findings(model: nn.Module) -> ArchFindings:
    """Ask `arch` what it finds in `model`, layer by layer (the only place doctor touches `arch`)."""
    try:
        adapter = get_adapter(model)
    except UnsupportedArchitectureError as err:
        return ArchFindings(family=None, error=str(err))
    config = adapter.model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None)
    spec = adapter.spec
    layers = []
    mixers = adapter.linear_layers()
    for index in range(adapter.num_layers):
        layout = adapter.layouts[index]
        norm = "rms" if spec.norm_type == "rms" else "layer"
        if adapter.input_norm_weight(index) is None:
            norm += " (no weight)"
        elif spec.norm_weight_offset:
            norm += f" ({spec.norm_weight_offset:g} + w)"
        mixer = mixers.get(index, "none")
        attention = f"none ({mixer if mixer != 'none' else 'an FFN-only layer'})"
        heads, qk_norm = "-", False
        if index in adapter.attention_layers:  # hybrids: the other layers are linear / state-space mixers
            q_norm, k_norm = adapter.qk_head_norm_weights(index)
            attention = adapter.module_path(index, "attention")
            heads = f"{adapter.num_heads} query heads, {adapter.num_kv_heads} key heads, "
            heads += f"head_dim {adapter.head_dim}"
            qk_norm = q_norm is not None or k_norm is not None
        ffn, ffn_shape = f"none ({layout.why_no_ffn or 'no MLP / feed-forward / MoE block'})", "-"
        if index in adapter.ffn_layers:
            d_model, d_ff = adapter.down_proj_weight(index).shape
            ffn = adapter.module_path(index, "ffn")
            ffn_shape = f"{d_model} x {d_ff}"
        layers.append(
            LayerFinding(
                index=index,
                layer_type=layer_types[index] if layer_types and index < len(layer_types) else None,
                attention=attention,
                heads=heads,
                qk_norm=qk_norm,
                input_norm=norm,
                ffn=ffn,
                ffn_shape=ffn_shape,
            )
        )
    heads_missing = None if adapter.head_layers else "no layer has readable query/key weights"
    return ArchFindings(
        family=spec.family, layers=layers, ffn_missing=adapter.ffn_missing(), heads_missing=heads_missing
    )


def verdicts(model: nn.Module, findings: ArchFindings) -> list[MetricVerdict]:
    """Which metric families the model gets, and how or why not (the pass's rules, from the findings)."""
    found = findings.error is None
    why_not = f"arch.py found no adapter: {findings.error}"
    has_embeddings = model.get_input_embeddings() is not None
    out = [
        MetricVerdict(
            "attribution",
            [names.INSTRUCTION_IMPORTANCE, names.ATTRIBUTION_SHARE_PREFIX + "<part>"],
            has_embeddings,
            "gradient x input on the input embeddings (their module's output, swapped in on the input ids)"
            if has_embeddings
            else "the model exposes no input embeddings (get_input_embeddings() is None)",
        ),
        MetricVerdict(
            "ablation",
            [names.ABLATION_DROP_REMOVED, names.ABLATION_DROP_REPLACED],
            has_embeddings,
            "forward passes with the instruction removed / replaced",
        ),
    ]
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    attention_free = not getattr(config, "num_attention_heads", None)
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    attention_names = [names.INSTRUCTION_ATTENTION, names.INSTRUCTION_ATTENTION_LIFT]
    if attention_free:
        no_attention = "the model has no attention"
        out.append(MetricVerdict("instruction attention", attention_names, False, no_attention))
    elif found and getattr(type(model), "_supports_attention_backend", False):
        out.append(
            MetricVerdict(
                "instruction attention",
                attention_names,
                True,
                f"per-layer probe inside the model's own attention ({implementation}); no seq x seq tensor",
            )
        )
    elif found:
        out.append(
            MetricVerdict(
                "instruction attention",
                attention_names,
                True,
                f"per-layer probe on eager attention: {type(model).__name__} does not route attention "
                "through transformers' AttentionInterface",
            )
        )
    else:
        out.append(
            MetricVerdict(
                "instruction attention",
                attention_names,
                True,
                "eager fallback: every layer's full seq x seq probabilities for each request (more memory, "
                f"slower, a warning); {why_not}",
            )
        )
    ffn_found = found and findings.ffn_missing is None
    ffn_how = (
        "PCA of each layer's FFN down projection, labelled by concept"
        if ffn_found
        else (why_not if not found else str(findings.ffn_missing))
    )
    heads_found = found and findings.heads_missing is None
    heads_how = "per-head query/key weights with the input norm folded in"
    heads_how = heads_how if heads_found else (why_not if not found else str(findings.heads_missing))
    out += [
        MetricVerdict("FFN concepts", [names.FFN_CONCEPT_PREFIX + "<concept>"], ffn_found, ffn_how),
        MetricVerdict("explain-heads", [], heads_found, heads_how),
        MetricVerdict("explain-ffn", [], ffn_found, ffn_how),
    ]
    return out


def _meta_model(source: str, kwargs: dict[str, Any]) -> nn.Module:
    """The model's modules built from its config on the meta device: structure and shapes, no weights."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(source, **kwargs)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UnsupportedArchitectureError(
            f"{source} is a {config.model_type!r} model, which transformers does not load as a causal "
            "(decoder-only) language model; lm-interp explains causal LMs"
        )
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def diagnose(
    path_or_hub_id: str | Path, gguf_file: str | None = None, revision: str | None = None
) -> Diagnosis:
    """Diagnose a model (folder, hub id or ``.gguf`` file) from its config alone.

    Raises:
        UnsupportedArchitectureError: the model is not a causal LM transformers knows.
    """
    source, kwargs = model_source(path_or_hub_id, gguf_file)
    if revision:
        kwargs["revision"] = revision
    model = _meta_model(source, kwargs)
    findings = arch_findings(model)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    name = str(Path(source) / kwargs["gguf_file"]) if "gguf_file" in kwargs else source
    return Diagnosis(
        model=name,
        model_class=type(model).__name__,
        model_type=getattr(config, "model_type", None),
        attn_implementation=getattr(model.config, "_attn_implementation", None),
        num_layers=getattr(config, "num_hidden_layers", None),
        findings=findings,
        verdicts=verdicts(model, findings),
    )


def _layer_groups(layers: list[LayerFinding]) -> list[tuple[str, LayerFinding]]:
    """Runs of consecutive layers whose findings differ only by the layer index: ``("0-29", first)``."""
    import re

    def shape(layer: LayerFinding) -> tuple:
        strip = re.compile(rf"\.{layer.index}(\.|$)")
        return (
            layer.layer_type,
            strip.sub(r".N\1", layer.attention),
            layer.heads,
            layer.qk_norm,
            layer.input_norm,
            strip.sub(r".N\1", layer.ffn),
            layer.ffn_shape,
        )

    groups: list[list[LayerFinding]] = []
    for layer in layers:
        if groups and shape(groups[-1][-1]) == shape(layer):
            groups[-1].append(layer)
        else:
            groups.append([layer])
    out = []
    for run in groups:
        first, last = run[0].index, run[-1].index
        layer = run[0]
        if first != last:  # name the modules of a run by pattern: model.layers.N.self_attn
            strip = re.compile(rf"\.{first}(\.|$)")
            layer = replace(
                layer, attention=strip.sub(r".N\1", layer.attention), ffn=strip.sub(r".N\1", layer.ffn)
            )
        out.append((str(first) if first == last else f"{first}-{last}", layer))
    return out


def format_diagnosis(diagnosis: Diagnosis) -> str:
    """The human-readable report: the model, what arch found per layer, then one line per metric family."""
    d, f = diagnosis, diagnosis.findings
    lines = [
        f"model: {d.model}",
        f"class: {d.model_class} (model_type {d.model_type!r}, {d.num_layers} layers, attention "
        f"implementation {d.attn_implementation})",
    ]
    if f.error is not None:
        lines.append(f"arch.py: no adapter: {f.error}")
    else:
        lines.append(f"arch.py: family row {f.family!r}; per layer:")
        for span, layer in _layer_groups(f.layers):
            kind = f" [{layer.layer_type}]" if layer.layer_type else ""
            qk = ", q/k norm per head" if layer.qk_norm else ""
            lines.append(
                f"  layers {span}{kind}: attention {layer.attention} ({layer.heads}{qk}), input norm "
                f"{layer.input_norm}; FFN {layer.ffn}, down projection {layer.ffn_shape}"
            )
    lines.append("metrics:")
    for v in d.verdicts:
        mark = "yes" if v.available else "no "
        which = f" [{', '.join(v.metrics)}]" if v.metrics else ""
        how = v.how.replace(f"arch.py found no adapter: {f.error}", "arch.py found no adapter (above)")
        lines.append(f"  {mark} {v.family}{which}: {how}")
    lines.append(
        "  opt-in: ig_* (interp_ig=true) and deletion_* (interp_deletion=true), wherever attribution is"
    )
    return "\n".join(lines)
