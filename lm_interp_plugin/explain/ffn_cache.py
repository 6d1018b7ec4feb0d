"""The FFN components of every layer (PCA of the value vectors) and their concept labels, cached on disk.

Both explain-ffn and the per-example FFN probe of the interpretation pass need every layer's components once
per model. They are computed here and cached as ``.npz`` (no pickle), keyed by model identity, k, weight dtype
and a cheap checksum of the down-projection weights, so new weights under the same name are never served
stale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..arch import ArchAdapter, UnsupportedArchitectureError, get_adapter
from ..methods.concepts import ConceptLabel, ConceptLabeller, build_labeller
from ..methods.ffn import (
    FFNComponents,
    component_top_words,
    ffn_pca,
    normalise_rows,
)
from ..methods.vocab import resolve_word_vocab

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

_CACHE_FORMAT = 1


def make_labeller(
    labeller: str | ConceptLabeller,
    labeller_options: dict[str, Any] | None,
    embeddings: torch.Tensor | None,
    tokenizer: PreTrainedTokenizerBase,
) -> ConceptLabeller:
    if isinstance(labeller, ConceptLabeller):
        return labeller
    if not isinstance(labeller, str):
        raise TypeError(
            f"labeller must be a registered name or a ConceptLabeller, got {type(labeller).__name__}"
        )
    return build_labeller(labeller, embeddings=embeddings, tokenizer=tokenizer, **(labeller_options or {}))


def label_components(
    labeller: ConceptLabeller,
    layer_poles: Sequence[Sequence[tuple[list[str], list[str]]]],
    components: Sequence[FFNComponents],
) -> list[list[ConceptLabel]]:
    """Every component's label, all layers at once (the labeller's false-discovery control runs over all of
    them), with the components themselves as the basis of the labeller's null (`concepts.null_directions`)."""
    flat = [pole for poles in layer_poles for pole in poles]
    basis = torch.cat([c.components.detach().float().cpu() for c in components]) if components else None
    labels = labeller.label_all(flat, basis)
    out, start = [], 0
    for poles in layer_poles:
        out.append(labels[start : start + len(poles)])
        start += len(poles)
    return out


def compute_components(
    adapter: ArchAdapter, k: int, layers: Sequence[int], progress: bool
) -> list[FFNComponents]:
    out = []
    for layer in tqdm(layers, desc="explain-ffn PCA", disable=not progress):
        out.append(ffn_pca(adapter.down_proj_weight(layer), k))
    return out


def to_cpu(c: FFNComponents) -> FFNComponents:
    return FFNComponents(
        *(t.detach().cpu() for t in (c.components, c.explained_variance, c.explained_variance_ratio, c.mean))
    )


# -- npz helpers (no pickle)
# -------------------------------------------------------------------------------------
def components_to_arrays(components: Sequence[FFNComponents]) -> dict[str, np.ndarray]:
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


def arrays_to_components(data: Any) -> list[FFNComponents]:
    arrays = [
        torch.from_numpy(np.ascontiguousarray(data[name]))  # one memory layout: matmuls round alike
        for name in ("components", "explained_variance", "explained_variance_ratio", "mean")
    ]
    return [FFNComponents(*(a[i] for a in arrays)) for i in range(arrays[0].shape[0])]


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
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


def save_npz(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    payload = {**arrays, "meta": np.array(json.dumps(meta, sort_keys=True))}
    atomic_write(path, lambda handle: np.savez(handle, **payload))


def load_npz(path: Path) -> tuple[list[FFNComponents], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return arrays_to_components(data), meta


# -- on-disk component cache
# -------------------------------------------------------------------------------------
def down_proj_checksum(adapter: ArchAdapter) -> str:
    """A cheap checksum of every layer's down-projection: float64 sums plus a hash of a strided sample.

    The sums see a change anywhere in a matrix (fine-tuning moves every weight), the sampled hash sees
    changes the sums could cancel. Reads each matrix once, on its own device.
    """
    h = hashlib.sha256()
    for layer in adapter.ffn_layers:
        W = adapter.down_proj_weight(layer)
        rows, cols = W.shape
        sample = W[:: max(1, rows // 64), :: max(1, cols // 64)]
        h.update(sample.float().cpu().contiguous().numpy().tobytes())
        sums = torch.stack([torch.sum(W, dtype=torch.float64), torch.sum(W.abs(), dtype=torch.float64)])
        h.update(sums.cpu().numpy().tobytes())
        h.update(repr(tuple(W.shape)).encode())
    return h.hexdigest()[:16]


#: longest readable model name in a cache file name (the digest keys the file; the name is for people)
NAME_CHARS = 60


def readable_name(identity: str, limit: int = NAME_CHARS) -> str:
    """The end of `identity` as a file-name part of at most `limit` characters, cut only where a word starts
    (after ``_``, ``-`` or ``.``: a path's separators become ``_``), so ``..._models_llama-3-8b`` keeps
    ``models_llama-3-8b`` and never ``dels_llama-3-8b``; a single word longer than `limit` keeps its end."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in identity).strip("_.-")
    if len(safe) <= limit:
        return safe
    starts = [i for i in range(len(safe) - limit, len(safe)) if safe[i - 1] in "_-." and safe[i] not in "_-."]
    return safe[starts[0] :] if starts else safe[-limit:]


def component_cache_path(
    cache_dir: str | Path, model_identity: str, k: int, dtype: str, checksum: str
) -> Path:
    """The cache file of (model identity, k, dtype, checksum): readable prefix, hashed key."""
    key = json.dumps(
        {"identity": model_identity, "k": k, "dtype": dtype, "checksum": checksum, "format": _CACHE_FORMAT},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"ffn_components_{readable_name(model_identity)}_k{k}_{digest}.npz"


def _load_or_compute(
    model: torch.nn.Module, k: int, cache_dir: str | Path, model_identity: str, progress: bool
):
    if not model_identity:
        raise ValueError("model_identity is empty; pass the model's name or path (it keys the cache)")
    adapter = get_adapter(model)
    missing = adapter.ffn_missing()
    if missing is not None:
        raise UnsupportedArchitectureError(f"{type(model).__name__}: no FFN concepts: {missing}")
    layers = adapter.ffn_layers
    dtype = str(adapter.down_proj_weight(layers[0]).dtype).replace("torch.", "")
    checksum = down_proj_checksum(adapter)
    meta = {
        "identity": model_identity,
        "k": k,
        "dtype": dtype,
        "checksum": checksum,
        "format": _CACHE_FORMAT,
        "num_layers": adapter.num_layers,
    }
    if layers != list(range(adapter.num_layers)):  # a hybrid: the model layer index of each entry
        meta["ffn_layers"] = layers
    path = component_cache_path(cache_dir, model_identity, k, dtype, checksum)
    if path.is_file():
        try:
            components, stored = load_npz(path)
            if stored == meta and len(components) == len(layers):
                logger.info("FFN components of %s read from cache %s", model_identity, path)
                return adapter, components, path
            logger.warning(
                "FFN component cache %s does not match this model (%s vs %s); recomputing", path, stored, meta
            )
        except (OSError, ValueError, KeyError) as err:
            logger.warning("FFN component cache %s is unreadable (%s); recomputing", path, err)
    arrays = components_to_arrays(compute_components(adapter, k, layers, progress))
    save_npz(path, arrays, meta)
    # use exactly what a later run reads back from the cache (float32 arrays), so that a resumed run and an
    # uninterrupted one compute with the same numbers, bit for bit
    components = arrays_to_components(arrays)
    logger.info("FFN components of %s cached at %s", model_identity, path)
    return adapter, components, path


@torch.no_grad()
def load_or_compute_components(
    model: torch.nn.Module, k: int, cache_dir: str | Path, model_identity: str, progress: bool = True
) -> list[FFNComponents]:
    """Every layer's top-k FFN components, from ``cache_dir`` when cached, else computed and cached.

    The cache key is (model identity, k, weight dtype, `down_proj_checksum`): new weights under the same
    name (a further fine-tuned checkpoint) miss the cache instead of returning stale components. Files are
    ``.npz`` with a JSON metadata entry, loaded without pickle; an unreadable or mismatching file is
    recomputed with a warning.

    Returns:
        One `FFNComponents` per layer with an FFN (`ArchAdapter.ffn_layers`: every layer except a hybrid's
        FFN-less ones; CPU tensors), in layer order.
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
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    k: int,
    cache_dir: str | Path,
    model_identity: str,
    labeller: str | ConceptLabeller = "lexicon",
    labeller_options: dict[str, Any] | None = None,
    top_n: int = 15,
    max_words: int | None = None,
    progress: bool = True,
    return_labeller: bool = False,
) -> Any:
    """Components and their labels for every layer, both cached (labels as JSON next to the ``.npz``).

    This is what the per-example FFN concept activation needs: project each layer's FFN output on its
    components (`methods.ffn.concept_activation`) and pool the shares by label (`methods.ffn.concept_shares`).

    Returns:
        ``(components, labels)``: per layer, its `FFNComponents` and its ``k`` `ConceptLabel`s; with
        `return_labeller` also the labeller (its concepts and config).
    """
    adapter, components, cpath = _load_or_compute(model, k, cache_dir, model_identity, progress)
    E_out = adapter.output_embedding_matrix()
    lab = make_labeller(labeller, labeller_options, E_out, tokenizer)
    word_vocab, vocab_source = resolve_word_vocab(tokenizer, None, max_words)
    lpath = _labels_path(cpath, lab.config(), top_n, vocab_source)
    if lpath.is_file():
        try:
            data = json.loads(lpath.read_text(encoding="utf-8"))
            labels = [[ConceptLabel.from_dict(d) for d in layer] for layer in data["labels"]]
            if len(labels) == len(components) and all(len(x) == k for x in labels):
                return (components, labels, lab) if return_labeller else (components, labels)
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("FFN label cache %s is unreadable (%s); recomputing", lpath, err)
    words_normed = normalise_rows(E_out[torch.tensor(word_vocab.token_ids, device=E_out.device)])
    layer_poles = [
        component_top_words(comps.components, words_normed, word_vocab.words, top_n)
        for comps in tqdm(components, desc="FFN component words", disable=not progress)
    ]
    labels = label_components(lab, layer_poles, components)
    payload = {
        "labeller": lab.config(),
        "top_n": top_n,
        "vocab": vocab_source,
        "concepts": list(lab.concepts),
        "levels": list(lab.levels),
        "labels": [[x.to_dict() for x in layer] for layer in labels],
    }
    atomic_write(lpath, lambda h: h.write(json.dumps(payload, ensure_ascii=False).encode("utf-8")))
    return (components, labels, lab) if return_labeller else (components, labels)
