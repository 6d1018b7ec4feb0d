"""``lm-interp explain-ffn``: every layer's FFN principal components as concepts, saved as JSONL.

Joins the architecture adapter (down-projections, output embeddings) with the pure methods in
`lm_interp_plugin.methods.ffn` (PCA, top words) and `lm_interp_plugin.methods.concepts` (labelling).
``explain_ffn`` -> `FFNExplanation`; ``write_ffn_jsonl`` writes a header line (model fingerprint, params,
categories) and one line per layer (explained variance, each component's top words at both poles, its labels);
the component vectors go to a sidecar ``<stem>.components.npz`` (no pickle) so that two files, base and tuned,
can be compared later without the models (`ffn_compare`). The component cache is `ffn_cache`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ..arch import get_adapter
from ..methods.concepts import NONE, ConceptLabel, ConceptLabeller
from ..methods.ffn import (
    FFNComponents,
    component_top_words,
    normalise_rows,
)
from ..methods.vocab import WordVocab, resolve_word_vocab
from .ffn_cache import (
    components_to_arrays,
    compute_components,
    label_components,
    load_npz,
    load_or_compute_components,
    make_labeller,
    save_npz,
    to_cpu,
)
from .ffn_validity import FFNValidity, load_or_compute_activations, measure_validity
from .io import read_header_jsonl
from .loading import load_model_for_explain, model_fingerprint, parse_layers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

FFN_SCHEMA_VERSION = 1
LAYER_GROUPS = ("first", "middle", "last")
LABEL_KINDS = ("concept", "level")


# -- records
# -----------------------------------------------------------------------------------------------------
@dataclass
class FFNLayerConcepts:
    """One layer's components as words and labels.

    Attributes:
        layer: layer index.
        explained_variance_ratio: ``k`` shares of the value vectors' variance.
        positive: per component, the words it promotes (top of the projection onto output embeddings).
        negative: per component, the words it suppresses (bottom of the projection).
        labels: per component, its `ConceptLabel`.
    """

    layer: int
    explained_variance_ratio: list[float]
    positive: list[list[str]]
    negative: list[list[str]]
    labels: list[ConceptLabel]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "explained_variance_ratio": self.explained_variance_ratio,
            "components": [
                {
                    "index": j,
                    "explained_variance_ratio": r,
                    "positive": p,
                    "negative": n,
                    "label": lab.to_dict(),
                }
                for j, (r, p, n, lab) in enumerate(
                    zip(self.explained_variance_ratio, self.positive, self.negative, self.labels)
                )
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FFNLayerConcepts:
        comps = data["components"]
        return cls(
            layer=int(data["layer"]),
            explained_variance_ratio=[float(x) for x in data["explained_variance_ratio"]],
            positive=[list(c["positive"]) for c in comps],
            negative=[list(c["negative"]) for c in comps],
            labels=[ConceptLabel.from_dict(c["label"]) for c in comps],
        )


@dataclass
class FFNExplanation:
    """A model's FFN concepts for the explained layers.

    Attributes:
        fingerprint: model identity (see `lm_interp_plugin.fingerprint.model_fingerprint`).
        params: settings (k, top_n, vocabulary, labeller config, layers).
        num_layers: layers of the model (not only the explained ones).
        concepts: task concepts the labeller can assign (``"other"`` besides).
        levels: linguistic levels the labeller can assign.
        layers: one `FFNLayerConcepts` per explained layer, in layer order.
        components: the matching `FFNComponents` (``None`` when read without the sidecar file).
        validity: each concept's validity on the model (`explain.ffn_validity`), when measured.
    """

    fingerprint: dict[str, Any]
    params: dict[str, Any]
    num_layers: int
    concepts: list[str]
    levels: list[str]
    layers: list[FFNLayerConcepts]
    components: list[FFNComponents] | None = None
    validity: FFNValidity | None = None

    def categories(self, kind: str) -> list[str]:
        """The categories of a label kind (``"concept"`` or ``"level"``), ``"none"`` last."""
        if kind not in LABEL_KINDS:
            raise ValueError(f"label kind {kind!r} is not one of {LABEL_KINDS}")
        return [*(self.concepts if kind == "concept" else self.levels), NONE]


@torch.no_grad()
def explain_ffn(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    k: int = 10,
    top_n: int = 15,
    labeller: str | ConceptLabeller = "lexicon",
    labeller_options: dict[str, Any] | None = None,
    layers: str | Sequence[int] | None = None,
    vocab: str | Path | Sequence[str] | WordVocab | None = None,
    max_words: int | None = None,
    cache_dir: str | Path | None = None,
    model_identity: str | None = None,
    progress: bool = True,
    validate: bool = False,
) -> FFNExplanation:
    """Explain every (selected) layer's FFN as its top-k principal components, their words and concepts.

    Args:
        model, tokenizer: a Hugging Face causal LM of a supported family and its tokenizer.
        k: principal components per layer.
        top_n: words per pole of each component.
        labeller: ``"lexicon"``, ``"llm:PATH"``, ``"llm:PATH::FILE.gguf"`` or a `ConceptLabeller`.
        labeller_options: keyword options of the labeller (e.g. ``{"threshold": 0.15}``).
        layers: None (all), a list, or a string such as ``"0-3,7"``.
        vocab: words the components are read in: None (the tokenizer's whole-word tokens), a word list, or a
            text file with one word per line.
        max_words: cap on the whole-word vocabulary.
        cache_dir: if given, components of all layers are cached there (see `load_or_compute_components`).
        model_identity: cache key of the model (default: its name or path).
        progress: show tqdm bars.
        validate: measure each concept's validity on the shipped ``interp_instruct`` items
            (`explain.ffn_validity`); the per-item activations are cached in `cache_dir` when given.
    """
    adapter = get_adapter(model)
    chosen = adapter.ffn_layers if layers is None else parse_layers(layers, adapter.num_layers)
    without = [layer for layer in chosen if layer not in adapter.ffn_layers]
    if without:
        raise ValueError(
            f"layers {without} have no readable FFN ({type(model).__name__}); layers with one: "
            f"{adapter.ffn_layers}. Pick among those, or omit --layers"
        )
    fingerprint = model_fingerprint(model, tokenizer)
    if cache_dir is not None:
        identity = model_identity or str(fingerprint.get("model") or fingerprint.get("model_type"))
        every = load_or_compute_components(model, k, cache_dir, identity, progress=progress)
        row = {layer: i for i, layer in enumerate(adapter.ffn_layers)}
        components = [every[row[layer]] for layer in chosen]
    else:
        components = compute_components(adapter, k, chosen, progress)

    E_out = adapter.output_embedding_matrix()
    word_vocab, vocab_source = resolve_word_vocab(tokenizer, vocab, max_words)
    ids = torch.tensor(word_vocab.token_ids, device=E_out.device)
    if int(ids.max()) >= E_out.shape[0]:
        raise ValueError(
            f"token id {int(ids.max())} is outside the model's {E_out.shape[0]} output embeddings"
        )
    words_normed = normalise_rows(E_out[ids])
    lab = make_labeller(labeller, labeller_options, E_out, tokenizer)
    logger.info(
        "explain-ffn: %d layers, k=%d, %d words (%s), labeller %s",
        len(chosen),
        k,
        len(word_vocab.words),
        vocab_source,
        lab.name,
    )

    layer_poles = [
        component_top_words(comps.components, words_normed, word_vocab.words, top_n)
        for comps in tqdm(components, desc="explain-ffn top words", disable=not progress)
    ]
    labels = label_components(lab, layer_poles, components)
    per_layer = [
        FFNLayerConcepts(
            layer=layer,
            explained_variance_ratio=[round(float(x), 8) for x in comps.explained_variance_ratio],
            positive=[p for p, _ in poles],
            negative=[n for _, n in poles],
            labels=layer_labels,
        )
        for layer, comps, poles, layer_labels in zip(chosen, components, layer_poles, labels)
    ]
    validity = None
    if validate:
        cache = (
            None
            if cache_dir is None
            else Path(cache_dir) / f"ffn_validity_{fingerprint_key(fingerprint)}.npz"
        )
        acts, categories = load_or_compute_activations(model, tokenizer, components, cache, chosen)
        validity = measure_validity(
            acts, categories, [[x.concept for x in layer] for layer in labels], lab.concepts, lab.config()
        )
    params = {
        "k": k,
        "top_n": top_n,
        "vocab_source": vocab_source,
        "vocab_size": len(word_vocab.words),
        "layers": chosen,
        "labeller": lab.config(),
        "pca": "centred value vectors (columns of W_down); sign: largest |loading| positive",
    }
    return FFNExplanation(
        fingerprint=fingerprint,
        params=params,
        num_layers=adapter.num_layers,
        concepts=list(lab.concepts),
        levels=list(lab.levels),
        layers=per_layer,
        components=[to_cpu(c) for c in components],
        validity=validity,
    )


def fingerprint_key(fingerprint: dict[str, Any]) -> str:
    """A short, file-name-safe key of a model fingerprint."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _components_path(jsonl_path: Path) -> Path:
    return jsonl_path.with_name(jsonl_path.stem + ".components.npz")


# -- JSONL
# -------------------------------------------------------------------------------------------------------
def write_ffn_jsonl(path: str | Path, expl: FFNExplanation) -> Path:
    """Write a header line and one line per layer; component vectors go to ``<stem>.components.npz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = None
    if expl.components is not None:
        sidecar = _components_path(path)
        save_npz(sidecar, components_to_arrays(expl.components), {"layers": [lc.layer for lc in expl.layers]})
    header = {
        "type": "header",
        "kind": "ffn",
        "schema_version": FFN_SCHEMA_VERSION,
        "fingerprint": expl.fingerprint,
        "params": expl.params,
        "num_layers": expl.num_layers,
        "concepts": expl.concepts,
        "levels": expl.levels,
        "components_file": sidecar.name if sidecar else None,
        "validity": expl.validity.to_dict() if expl.validity is not None else None,
    }
    with path.open("w", encoding="utf-8") as f:
        f.write(json.dumps(header, ensure_ascii=False) + "\n")
        for layer in expl.layers:
            f.write(json.dumps({"type": "layer", **layer.to_dict()}, ensure_ascii=False) + "\n")
    return path


def read_ffn_jsonl(path: str | Path, load_components: bool = True) -> FFNExplanation:
    """Read a file written by `write_ffn_jsonl` (and its components sidecar, when present)."""
    path = Path(path)
    header, layers = read_header_jsonl(
        path, "explain-ffn", "layer", FFNLayerConcepts.from_dict, FFN_SCHEMA_VERSION, header_kind="ffn"
    )
    components = None
    if load_components and header.get("components_file"):
        sidecar = path.with_name(header["components_file"])
        if sidecar.is_file():
            components, meta = load_npz(sidecar)
            if meta.get("layers") != [lc.layer for lc in layers]:
                raise ValueError(
                    f"{sidecar} holds layers {meta.get('layers')} but {path} has other layers; "
                    "rewrite both with explain-ffn"
                )
        else:
            logger.warning("%s names %s, which is missing; component vectors are not loaded", path, sidecar)
    return FFNExplanation(
        fingerprint=header["fingerprint"],
        params=header["params"],
        num_layers=int(header["num_layers"]),
        concepts=list(header["concepts"]),
        levels=list(header["levels"]),
        layers=layers,
        components=components,
        validity=FFNValidity.from_dict(header["validity"]) if header.get("validity") else None,
    )


def explain_ffn_to_file(
    model_path: str | Path,
    out: str | Path,
    *,
    dtype: str = "auto",
    device: str | None = None,
    revision: str | None = None,
    **options: Any,
) -> FFNExplanation:
    """Load `model_path`, explain its FFN layers (`explain_ffn` options) and write them to `out`
    (JSONL+npz)."""
    model, tokenizer = load_model_for_explain(model_path, dtype, device, revision)
    explanation = explain_ffn(model, tokenizer, **{k: v for k, v in options.items() if v is not None})
    write_ffn_jsonl(out, explanation)
    return explanation
