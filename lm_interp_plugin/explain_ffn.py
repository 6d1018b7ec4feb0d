"""``lm-interp explain-ffn``: every layer's FFN principal components as concepts, saved as JSONL.

Joins the architecture adapter (down-projections, output embeddings) with the pure methods in
`lm_interp_plugin.methods.ffn` (PCA, top words, principal angles) and `lm_interp_plugin.methods.concepts`
(labelling). Outputs:

- ``explain_ffn`` -> `FFNExplanation`; ``write_ffn_jsonl`` writes a header line (model fingerprint, params,
  categories) and one line per layer (explained variance, each component's top words at both poles, its
  labels); the component vectors go to a sidecar ``<stem>.components.npz`` (no pickle) so that two files,
  base and tuned, can be compared later without the models.
- ``compare_ffn`` -> `FFNComparison`: per-layer principal angles (rotation of the top-k subspace), matched
  components with word and label changes, concept proportions per layer group with tests
  (``format_table5``, the paper's Table 5 form), ``plot_concept_proportions`` (Figure 3 form) and
  ``plot_rotation``.
- ``load_or_compute_components`` / ``load_or_compute_concepts``: the per-example side (FFN concept
  activation in the harness) needs every layer's components once per model; they are cached on disk keyed by
  model identity, k, dtype and a cheap checksum of the down-projection weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .arch import ArchAdapter, get_adapter
from .explain_heads import load_model_for_explain, model_fingerprint, parse_layers
from .explain_io import read_header_jsonl
from .methods.attention import WordVocab, resolve_word_vocab
from .methods.concepts import OTHER, ConceptLabel, ConceptLabeller, build_labeller
from .methods.ffn import (
    FFNComponents,
    component_top_words,
    ffn_pca,
    match_components,
    normalise_rows,
    principal_angles,
)

logger = logging.getLogger(__name__)

FFN_SCHEMA_VERSION = 1
LAYER_GROUPS = ("first", "middle", "last")
LABEL_KINDS = ("concept", "level")
_CACHE_FORMAT = 1

__all__ = [
    "FFNComparison",
    "FFNExplanation",
    "FFNLayerConcepts",
    "GroupProportions",
    "MatchedComponent",
    "compare_ffn",
    "component_cache_path",
    "down_proj_checksum",
    "explain_ffn",
    "format_table5",
    "load_model_for_explain",
    "load_or_compute_components",
    "load_or_compute_concepts",
    "plot_concept_proportions",
    "plot_rotation",
    "read_ffn_jsonl",
    "write_ffn_jsonl",
]


# -- records -----------------------------------------------------------------------------------------------------
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
        fingerprint: model identity (see `explain_heads.model_fingerprint`).
        params: settings (k, top_n, vocabulary, labeller config, layers).
        num_layers: layers of the model (not only the explained ones).
        concepts: task concepts the labeller can assign (``"other"`` besides).
        levels: linguistic levels the labeller can assign.
        layers: one `FFNLayerConcepts` per explained layer, in layer order.
        components: the matching `FFNComponents` (``None`` when read without the sidecar file).
    """

    fingerprint: dict[str, Any]
    params: dict[str, Any]
    num_layers: int
    concepts: list[str]
    levels: list[str]
    layers: list[FFNLayerConcepts]
    components: list[FFNComponents] | None = None

    def categories(self, kind: str) -> list[str]:
        """The categories of a label kind (``"concept"`` or ``"level"``), ``"other"`` last."""
        if kind not in LABEL_KINDS:
            raise ValueError(f"label kind {kind!r} is not one of {LABEL_KINDS}")
        return [*(self.concepts if kind == "concept" else self.levels), OTHER]


# -- the explanation ---------------------------------------------------------------------------------------------
def _make_labeller(labeller, labeller_options, embeddings, tokenizer) -> ConceptLabeller:
    if isinstance(labeller, ConceptLabeller):
        return labeller
    if not isinstance(labeller, str):
        raise TypeError(
            f"labeller must be a registered name or a ConceptLabeller, got {type(labeller).__name__}"
        )
    return build_labeller(labeller, embeddings=embeddings, tokenizer=tokenizer, **(labeller_options or {}))


def _compute_components(
    adapter: ArchAdapter, k: int, layers: Sequence[int], progress: bool
) -> list[FFNComponents]:
    out = []
    for layer in tqdm(layers, desc="explain-ffn PCA", disable=not progress):
        out.append(ffn_pca(adapter.down_proj_weight(layer), k))
    return out


@torch.no_grad()
def explain_ffn(
    model,
    tokenizer,
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
) -> FFNExplanation:
    """Explain every (selected) layer's FFN as its top-k principal components, their words and concepts.

    Args:
        model, tokenizer: a Hugging Face causal LM of a supported family and its tokenizer.
        k: principal components per layer.
        top_n: words per pole of each component.
        labeller: a registered labeller name (``"lexicon"``, ``"local_lm"``) or a `ConceptLabeller`.
        labeller_options: keyword options of the labeller (e.g. ``{"threshold": 0.15}``).
        layers: None (all), a list, or a string such as ``"0-3,7"``.
        vocab: words the components are read in: None (the tokenizer's whole-word tokens), a word list, or a
            text file with one word per line.
        max_words: cap on the whole-word vocabulary.
        cache_dir: if given, components of all layers are cached there (see `load_or_compute_components`).
        model_identity: cache key of the model (default: its name or path).
        progress: show tqdm bars.
    """
    adapter = get_adapter(model)
    chosen = parse_layers(layers, adapter.num_layers)
    fingerprint = model_fingerprint(model, tokenizer, adapter)
    if cache_dir is not None:
        identity = model_identity or str(fingerprint.get("model") or fingerprint.get("model_type"))
        every = load_or_compute_components(model, k, cache_dir, identity, progress=progress)
        components = [every[layer] for layer in chosen]
    else:
        components = _compute_components(adapter, k, chosen, progress)

    E_out = adapter.output_embedding_matrix()
    word_vocab, vocab_source = resolve_word_vocab(tokenizer, vocab, max_words)
    ids = torch.tensor(word_vocab.token_ids, device=E_out.device)
    if int(ids.max()) >= E_out.shape[0]:
        raise ValueError(
            f"token id {int(ids.max())} is outside the model's {E_out.shape[0]} output embeddings"
        )
    words_normed = normalise_rows(E_out[ids])
    lab = _make_labeller(labeller, labeller_options, E_out, tokenizer)
    logger.info(
        "explain-ffn: %d layers, k=%d, %d words (%s), labeller %s",
        len(chosen),
        k,
        len(word_vocab.words),
        vocab_source,
        lab.name,
    )

    per_layer: list[FFNLayerConcepts] = []
    for layer, comps in tqdm(list(zip(chosen, components)), desc="explain-ffn", disable=not progress):
        poles = component_top_words(comps.components, words_normed, word_vocab.words, top_n)
        per_layer.append(
            FFNLayerConcepts(
                layer=layer,
                explained_variance_ratio=[round(float(x), 8) for x in comps.explained_variance_ratio],
                positive=[p for p, _ in poles],
                negative=[n for _, n in poles],
                labels=[lab.label(p, n) for p, n in poles],
            )
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
        components=[_to_cpu(c) for c in components],
    )


def _to_cpu(c: FFNComponents) -> FFNComponents:
    return FFNComponents(
        *(t.detach().cpu() for t in (c.components, c.explained_variance, c.explained_variance_ratio, c.mean))
    )


# -- npz helpers (no pickle) -------------------------------------------------------------------------------------
def _components_to_arrays(components: Sequence[FFNComponents]) -> dict[str, np.ndarray]:
    return {
        "components": np.stack([c.components.detach().cpu().float().numpy() for c in components]),
        "explained_variance": np.stack(
            [c.explained_variance.detach().cpu().float().numpy() for c in components]
        ),
        "explained_variance_ratio": np.stack(
            [c.explained_variance_ratio.detach().cpu().float().numpy() for c in components]
        ),
        "mean": np.stack([c.mean.detach().cpu().float().numpy() for c in components]),
    }


def _arrays_to_components(data: Any) -> list[FFNComponents]:
    arrays = [
        torch.from_numpy(np.array(data[name]))
        for name in ("components", "explained_variance", "explained_variance_ratio", "mean")
    ]
    return [FFNComponents(*(a[i] for a in arrays)) for i in range(arrays[0].shape[0])]


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a killed run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_npz(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    payload = {**arrays, "meta": np.array(json.dumps(meta, sort_keys=True))}
    _atomic_write(path, lambda handle: np.savez(handle, **payload))


def _load_npz(path: Path) -> tuple[list[FFNComponents], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return _arrays_to_components(data), meta


def _components_path(jsonl_path: Path) -> Path:
    return jsonl_path.with_name(jsonl_path.stem + ".components.npz")


# -- JSONL -------------------------------------------------------------------------------------------------------
def write_ffn_jsonl(path: str | Path, expl: FFNExplanation) -> Path:
    """Write a header line and one line per layer; component vectors go to ``<stem>.components.npz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = None
    if expl.components is not None:
        sidecar = _components_path(path)
        _save_npz(
            sidecar, _components_to_arrays(expl.components), {"layers": [lc.layer for lc in expl.layers]}
        )
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
            components, meta = _load_npz(sidecar)
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
    )


# -- on-disk component cache -------------------------------------------------------------------------------------
def down_proj_checksum(adapter: ArchAdapter) -> str:
    """A cheap checksum of every layer's down-projection: float64 sums plus a hash of a strided sample.

    The sums see a change anywhere in a matrix (fine-tuning moves every weight), the sampled hash sees
    changes the sums could cancel. Reads each matrix once, on its own device.
    """
    h = hashlib.sha256()
    for layer in range(adapter.num_layers):
        W = adapter.down_proj_weight(layer)
        rows, cols = W.shape
        sample = W[:: max(1, rows // 64), :: max(1, cols // 64)]
        h.update(sample.float().cpu().contiguous().numpy().tobytes())
        sums = torch.stack([torch.sum(W, dtype=torch.float64), torch.sum(W.abs(), dtype=torch.float64)])
        h.update(sums.cpu().numpy().tobytes())
        h.update(repr(tuple(W.shape)).encode())
    return h.hexdigest()[:16]


def component_cache_path(
    cache_dir: str | Path, model_identity: str, k: int, dtype: str, checksum: str
) -> Path:
    """The cache file of (model identity, k, dtype, checksum): readable prefix, hashed key."""
    key = json.dumps(
        {"identity": model_identity, "k": k, "dtype": dtype, "checksum": checksum, "format": _CACHE_FORMAT},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_identity)[-60:]
    return Path(cache_dir) / f"ffn_components_{safe}_k{k}_{digest}.npz"


def _load_or_compute(model, k: int, cache_dir: str | Path, model_identity: str, progress: bool):
    if not model_identity:
        raise ValueError("model_identity is empty; pass the model's name or path (it keys the cache)")
    adapter = get_adapter(model)
    dtype = str(adapter.down_proj_weight(0).dtype).replace("torch.", "")
    checksum = down_proj_checksum(adapter)
    meta = {
        "identity": model_identity,
        "k": k,
        "dtype": dtype,
        "checksum": checksum,
        "format": _CACHE_FORMAT,
        "num_layers": adapter.num_layers,
    }
    path = component_cache_path(cache_dir, model_identity, k, dtype, checksum)
    if path.is_file():
        try:
            components, stored = _load_npz(path)
            if stored == meta and len(components) == adapter.num_layers:
                logger.info("FFN components of %s read from cache %s", model_identity, path)
                return adapter, components, path
            logger.warning(
                "FFN component cache %s does not match this model (%s vs %s); recomputing", path, stored, meta
            )
        except (OSError, ValueError, KeyError) as err:
            logger.warning("FFN component cache %s is unreadable (%s); recomputing", path, err)
    components = [_to_cpu(c) for c in _compute_components(adapter, k, range(adapter.num_layers), progress)]
    _save_npz(path, _components_to_arrays(components), meta)
    logger.info("FFN components of %s cached at %s", model_identity, path)
    return adapter, components, path


@torch.no_grad()
def load_or_compute_components(
    model, k: int, cache_dir: str | Path, model_identity: str, progress: bool = True
) -> list[FFNComponents]:
    """Every layer's top-k FFN components, from ``cache_dir`` when cached, else computed and cached.

    The cache key is (model identity, k, weight dtype, `down_proj_checksum`): new weights under the same
    name (a further fine-tuned checkpoint) miss the cache instead of returning stale components. Files are
    ``.npz`` with a JSON metadata entry, loaded without pickle; an unreadable or mismatching file is
    recomputed with a warning.

    Returns:
        One `FFNComponents` per layer (CPU tensors), in layer order.
    """
    return _load_or_compute(model, k, cache_dir, model_identity, progress)[1]


def _labels_path(
    components_path: Path, labeller_config: dict[str, Any], top_n: int, vocab_source: str
) -> Path:
    key = json.dumps({"labeller": labeller_config, "top_n": top_n, "vocab": vocab_source}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return components_path.with_name(f"{components_path.stem}.labels_{digest}.json")


@torch.no_grad()
def load_or_compute_concepts(
    model,
    tokenizer,
    k: int,
    cache_dir: str | Path,
    model_identity: str,
    labeller: str | ConceptLabeller = "lexicon",
    labeller_options: dict[str, Any] | None = None,
    top_n: int = 15,
    max_words: int | None = None,
    progress: bool = True,
) -> tuple[list[FFNComponents], list[list[ConceptLabel]]]:
    """Components and their labels for every layer, both cached (labels as JSON next to the ``.npz``).

    This is what the per-example FFN concept activation needs: project each layer's FFN output on its
    components (`methods.ffn.concept_activation`) and pool the shares by label (`methods.ffn.concept_shares`).

    Returns:
        ``(components, labels)``: per layer, its `FFNComponents` and its ``k`` `ConceptLabel`s.
    """
    adapter, components, cpath = _load_or_compute(model, k, cache_dir, model_identity, progress)
    E_out = adapter.output_embedding_matrix()
    lab = _make_labeller(labeller, labeller_options, E_out, tokenizer)
    word_vocab, vocab_source = resolve_word_vocab(tokenizer, None, max_words)
    lpath = _labels_path(cpath, lab.config(), top_n, vocab_source)
    if lpath.is_file():
        try:
            data = json.loads(lpath.read_text(encoding="utf-8"))
            labels = [[ConceptLabel.from_dict(d) for d in layer] for layer in data["labels"]]
            if len(labels) == len(components) and all(len(x) == k for x in labels):
                return components, labels
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("FFN label cache %s is unreadable (%s); recomputing", lpath, err)
    words_normed = normalise_rows(E_out[torch.tensor(word_vocab.token_ids, device=E_out.device)])
    labels = []
    for comps in tqdm(components, desc="label FFN components", disable=not progress):
        poles = component_top_words(comps.components, words_normed, word_vocab.words, top_n)
        labels.append([lab.label(p, n) for p, n in poles])
    payload = {
        "labeller": lab.config(),
        "top_n": top_n,
        "vocab": vocab_source,
        "concepts": list(lab.concepts),
        "levels": list(lab.levels),
        "labels": [[x.to_dict() for x in layer] for layer in labels],
    }
    _atomic_write(lpath, lambda h: h.write(json.dumps(payload, ensure_ascii=False).encode("utf-8")))
    return components, labels


# -- comparison --------------------------------------------------------------------------------------------------
@dataclass
class MatchedComponent:
    """A base component and the tuned component it was matched to (Hungarian on |cosine|).

    The tuned poles are swapped when the cosine is negative, so ``tuned_positive`` is the pole that points
    the same way as ``base_positive``. ``word_overlap`` is the share of the base's top words (both poles)
    found at the same pole of the tuned component.
    """

    layer: int
    base_index: int
    tuned_index: int
    cosine: float
    base_positive: list[str]
    base_negative: list[str]
    tuned_positive: list[str]
    tuned_negative: list[str]
    base_concept: str
    tuned_concept: str
    base_level: str
    tuned_level: str
    word_overlap: float

    @property
    def label_changed(self) -> bool:
        return self.base_concept != self.tuned_concept or self.base_level != self.tuned_level


@dataclass
class GroupProportions:
    """Shares of components per category in one layer group, base vs tuned, with tests.

    Attributes:
        kind: ``"concept"`` or ``"level"``.
        group: ``"first"``, ``"middle"`` or ``"last"`` third of the layers.
        layers: the layers of the group.
        categories: the categories (``"other"`` last).
        base_counts, tuned_counts: components per category.
        chi2, chi2_p: chi-square test of homogeneity of the 2 x categories table (categories empty in both
            models left out); NaN when fewer than two categories occur.
        z_p: per category, the two-sided p-value of the pooled two-proportion z-test (1.0 when both are 0
            or both are 100 %).
    """

    kind: str
    group: str
    layers: list[int]
    categories: list[str]
    base_counts: list[int]
    tuned_counts: list[int]
    chi2: float
    chi2_p: float
    z_p: list[float]

    @property
    def n_base(self) -> int:
        return sum(self.base_counts)

    @property
    def n_tuned(self) -> int:
        return sum(self.tuned_counts)

    def base_shares(self) -> list[float]:
        return [c / self.n_base if self.n_base else float("nan") for c in self.base_counts]

    def tuned_shares(self) -> list[float]:
        return [c / self.n_tuned if self.n_tuned else float("nan") for c in self.tuned_counts]


@dataclass
class FFNComparison:
    """Base vs tuned FFN concepts.

    Attributes:
        layers: the layers compared.
        angles: per layer, the ``k`` principal angles (degrees, ascending) between the top-k subspaces.
        matches: per layer, the matched components.
        proportions: per label kind and layer group, the category shares with tests.
        per_layer_shares: ``{"base"|"tuned": {kind: {category: [share per layer]}}}`` (Figure 3's data).
        fingerprints: ``{"base": ..., "tuned": ...}``.
    """

    layers: list[int]
    angles: list[list[float]]
    matches: list[list[MatchedComponent]]
    proportions: list[GroupProportions]
    per_layer_shares: dict[str, dict[str, dict[str, list[float]]]]
    fingerprints: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_angles(self) -> list[float]:
        return [float(np.mean(a)) for a in self.angles]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean_angles"] = self.mean_angles
        return out


def _layer_groups(layers: Sequence[int]) -> list[tuple[str, list[int]]]:
    parts = np.array_split(np.asarray(list(layers), dtype=int), len(LAYER_GROUPS))
    return [(name, [int(x) for x in part]) for name, part in zip(LAYER_GROUPS, parts)]


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (1.0 when the pooled share is 0 or 1)."""
    from scipy.stats import norm

    if n1 == 0 or n2 == 0:
        return float("nan")
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 1.0
    z = (x1 / n1 - x2 / n2) / math.sqrt(var)
    return float(2 * norm.sf(abs(z)))


def _group_proportions(kind, group, layers, categories, base_labels, tuned_labels) -> GroupProportions:
    from scipy.stats import chi2_contingency

    def counts(labels_by_layer):
        c = dict.fromkeys(categories, 0)
        for layer in layers:
            for lab in labels_by_layer[layer]:
                value = getattr(lab, kind)
                c[value if value in c else OTHER] += 1
        return [c[x] for x in categories]

    b, t = counts(base_labels), counts(tuned_labels)
    table = np.array([b, t])
    table = table[:, table.sum(axis=0) > 0]
    chi2, p = float("nan"), float("nan")
    if table.shape[1] >= 2 and table.sum(axis=1).min() > 0:
        res = chi2_contingency(table, correction=False)
        chi2, p = float(res[0]), float(res[1])
    z = [two_proportion_p(bi, sum(b), ti, sum(t)) for bi, ti in zip(b, t)]
    return GroupProportions(kind, group, list(layers), list(categories), b, t, chi2, p, z)


def compare_ffn(base: FFNExplanation, tuned: FFNExplanation) -> FFNComparison:
    """Rotation, matched components and concept-proportion shifts from base to tuned, per layer and group."""
    base_layers = [lc.layer for lc in base.layers]
    tuned_layers = [lc.layer for lc in tuned.layers]
    if base_layers != tuned_layers:
        raise ValueError(
            f"base explains layers {base_layers} but tuned explains {tuned_layers}; "
            "run explain-ffn on both with the same --layers"
        )
    if base.components is None or tuned.components is None:
        which = "base" if base.components is None else "tuned"
        raise ValueError(
            f"the {which} explanation has no component vectors (its .components.npz sidecar is "
            "missing); keep the sidecar next to the JSONL or rerun explain-ffn"
        )
    for key in ("k", "top_n", "vocab_source", "labeller"):
        if base.params.get(key) != tuned.params.get(key):
            logger.warning(
                "base and tuned FFN explanations differ in %s (%r vs %r); shares may not compare",
                key,
                base.params.get(key),
                tuned.params.get(key),
            )
    angles, matches = [], []
    for bl, tl, bc, tc in zip(base.layers, tuned.layers, base.components, tuned.components):
        angles.append([float(a) for a in principal_angles(bc.components, tc.components)])
        layer_matches = []
        for m in match_components(bc.components, tc.components):
            tp, tn = tl.positive[m.tuned_index], tl.negative[m.tuned_index]
            if m.cosine < 0:
                tp, tn = tn, tp
            bp, bn = bl.positive[m.base_index], bl.negative[m.base_index]
            total = len(bp) + len(bn)
            overlap = (len(set(bp) & set(tp)) + len(set(bn) & set(tn))) / total if total else 0.0
            blab, tlab = bl.labels[m.base_index], tl.labels[m.tuned_index]
            layer_matches.append(
                MatchedComponent(
                    bl.layer,
                    m.base_index,
                    m.tuned_index,
                    m.cosine,
                    bp,
                    bn,
                    tp,
                    tn,
                    blab.concept,
                    tlab.concept,
                    blab.level,
                    tlab.level,
                    overlap,
                )
            )
        matches.append(layer_matches)

    base_by_layer = {lc.layer: lc.labels for lc in base.layers}
    tuned_by_layer = {lc.layer: lc.labels for lc in tuned.layers}
    proportions: list[GroupProportions] = []
    shares: dict[str, dict[str, dict[str, list[float]]]] = {"base": {}, "tuned": {}}
    for kind in LABEL_KINDS:
        categories = list(dict.fromkeys(base.categories(kind) + tuned.categories(kind)))
        categories = [c for c in categories if c != OTHER] + [OTHER]
        for group, layers in _layer_groups(base_layers):
            if layers:
                proportions.append(
                    _group_proportions(kind, group, layers, categories, base_by_layer, tuned_by_layer)
                )
        for name, by_layer in (("base", base_by_layer), ("tuned", tuned_by_layer)):
            table = {}
            for cat in categories:
                table[cat] = [
                    sum(
                        (getattr(x, kind) if getattr(x, kind) in categories else OTHER) == cat
                        for x in by_layer[layer]
                    )
                    / max(1, len(by_layer[layer]))
                    for layer in base_layers
                ]
            shares[name][kind] = table
    return FFNComparison(
        layers=base_layers,
        angles=angles,
        matches=matches,
        proportions=proportions,
        per_layer_shares=shares,
        fingerprints={"base": base.fingerprint, "tuned": tuned.fingerprint},
    )


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def _p(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3g}"


def format_table5(cmp: FFNComparison, kind: str = "concept") -> str:
    """The paper's Table 5 form in markdown: % of components per category, base -> tuned, per layer group.

    Each cell is ``base% -> tuned%`` with the two-proportion test's p-value; the last row is the chi-square
    test of the whole group's distribution.
    """
    if kind not in LABEL_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {LABEL_KINDS}")
    groups = [g for g in cmp.proportions if g.kind == kind]
    if not groups:
        return f"(no {kind} proportions: no layers compared)\n"
    head = (
        "| "
        + kind
        + " | "
        + " | ".join(
            f"{g.group} layers {g.layers[0]}-{g.layers[-1]} (n={g.n_base}/{g.n_tuned})" for g in groups
        )
        + " |"
    )
    lines = [head, "|" + "---|" * (len(groups) + 1)]
    for i, cat in enumerate(groups[0].categories):
        cells = []
        for g in groups:
            b, t = g.base_shares()[i], g.tuned_shares()[i]
            cells.append(f"{_pct(b)} -> {_pct(t)} (p={_p(g.z_p[i])})")
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    lines.append("| chi-square p | " + " | ".join(_p(g.chi2_p) for g in groups) + " |")
    return "\n".join(lines) + "\n"


def plot_concept_proportions(cmp: FFNComparison, path: str | Path, kind: str = "concept") -> Path:
    """The paper's Figure 3 form: per category, its share of the components at each layer, base vs tuned."""
    from matplotlib.figure import Figure

    if kind not in LABEL_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {LABEL_KINDS}")
    base, tuned = cmp.per_layer_shares["base"][kind], cmp.per_layer_shares["tuned"][kind]
    cats = list(base)
    ncols = min(3, len(cats))
    nrows = math.ceil(len(cats) / ncols)
    fig = Figure(figsize=(4 * ncols, 2.8 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, cat in zip(axes.flat, cats):
        ax.plot(cmp.layers, [100 * x for x in base[cat]], "o--", label="base", color="tab:gray")
        ax.plot(cmp.layers, [100 * x for x in tuned[cat]], "o-", label="tuned", color="tab:blue")
        ax.set_title(cat)
        ax.set_xlabel("layer")
        ax.set_ylabel("% of components")
    for ax in list(axes.flat)[len(cats) :]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_rotation(cmp: FFNComparison, path: str | Path) -> Path:
    """Rotation of each layer's top-k FFN subspace: mean principal angle with the min-max range."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    lo = [min(a) for a in cmp.angles]
    hi = [max(a) for a in cmp.angles]
    ax.fill_between(cmp.layers, lo, hi, alpha=0.25, color="tab:blue", label="min-max")
    ax.plot(cmp.layers, cmp.mean_angles, "o-", color="tab:blue", label="mean")
    ax.set_xlabel("layer")
    ax.set_ylabel("principal angle (degrees)")
    ax.set_ylim(0, 90)
    ax.set_title("FFN top-k subspace rotation, base -> tuned")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
