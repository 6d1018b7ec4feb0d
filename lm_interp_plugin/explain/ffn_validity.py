"""Validity of FFN concept labels on a model: is a concept's per-example share higher on its own items?

A concept label is a claim about what a component does. The shipped ``interp_instruct`` items carry a
``category`` (coding, math, translation, rewriting, ...); ``data/concepts.json`` names each concept's
categories (``validation_categories``). On every item, teacher-forced on its reference exactly as the
per-example probe reads a request (the FFN outputs at the positions that predict the target tokens), the
concept's share of the FFN activation is computed; its AUC (items of its categories against all others) with
a stratified bootstrap interval says whether the share tells those items apart. A concept is valid on the
model when the AUC reaches `MIN_AUC` and the interval's lower end is above 0.5. Anything else is not
reported per example; the reason is kept (`ConceptValidity.reason`).

The per-item component activations do not depend on the labels, so they are cached per (model, k, layers)
and the validity of any labelling is recomputed from them in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..arch import get_adapter
from ..methods.concepts import load_validation_categories
from ..methods.ffn import FFNComponents, concept_activation
from .ffn_cache import atomic_write

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: A concept is reported per example only when its AUC on its own category's items reaches this.
MIN_AUC = 0.65
ITEMS_SOURCE = "interp_instruct"


@dataclass
class ConceptValidity:
    """One concept's validity on one model.

    Attributes:
        concept: the task concept.
        categories: the ``interp_instruct`` categories it should be highest on.
        n_components: components of the model labelled with it.
        n_positive, n_negative: items of its categories / of the others.
        auc: AUC of the per-item share (None when it cannot be computed).
        ci_low, ci_high: 95% stratified bootstrap interval of the AUC.
        valid: AUC >= `MIN_AUC` and ``ci_low`` > 0.5.
        reason: why it is not valid ("" when valid).
    """

    concept: str
    categories: list[str]
    n_components: int
    n_positive: int
    n_negative: int
    auc: float | None
    ci_low: float | None
    ci_high: float | None
    valid: bool
    reason: str = ""


@dataclass
class FFNValidity:
    """Every concept's validity on one model under one labeller (see module docstring)."""

    labeller: dict[str, Any]
    items: str
    min_auc: float
    concepts: list[ConceptValidity] = field(default_factory=list)

    def valid_concepts(self) -> list[str]:
        return [c.concept for c in self.concepts if c.valid]

    def absent(self) -> dict[str, str]:
        """Each concept left out of the per-example metrics, with the reason."""
        return {c.concept: c.reason for c in self.concepts if not c.valid}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FFNValidity:
        return cls(
            labeller=dict(data.get("labeller", {})),
            items=str(data.get("items", "")),
            min_auc=float(data.get("min_auc", MIN_AUC)),
            concepts=[ConceptValidity(**c) for c in data.get("concepts", [])],
        )

    def table(self) -> str:
        """A plain-text table: one row per concept."""
        lines = [
            f"FFN concept validity on {self.items} (valid: AUC >= {self.min_auc:.2f} and 95% CI above 0.5)"
        ]
        for c in self.concepts:
            auc = "n/a" if c.auc is None else f"{c.auc:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}]"
            verdict = "valid" if c.valid else f"absent: {c.reason}"
            lines.append(
                f"  {c.concept:<12} {c.n_components:>4} components  {'+'.join(c.categories) or '-':<20} "
                f"AUC {auc}  {verdict}"
            )
        return "\n".join(lines)


# -- items
# ------------------------------------------------------------------------------------------------------
def instruct_items() -> list[dict[str, Any]]:
    """The shipped ``interp_instruct`` items (id, category, instruction, input, reference)."""
    source = resources.files("lm_interp_plugin.tasks").joinpath("interp_instruct.jsonl")
    return [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]


def render_item(item: dict[str, Any]) -> tuple[str, str]:
    """(prompt, target) exactly as the ``interp_instruct`` task renders an item and its reference."""
    prompt = item["instruction"] + "\n\n"
    if item.get("input"):
        prompt += f"Input: {item['input']}\n\n"
    return prompt + "Output:", " " + item["reference"]


# -- activations
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def item_activations(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    components: Sequence[FFNComponents],
    items: Sequence[dict[str, Any]],
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """``items x layers x k`` component activation (`methods.ffn.concept_activation`) of each item,
    teacher-forced on its reference: the FFN outputs at the positions that predict the target tokens.

    Batched with right padding (a causal model's earlier positions do not see the padding)."""
    adapter = get_adapter(model)
    layers = adapter.ffn_layers if layers is None else list(layers)
    if len(components) != len(layers):
        raise ValueError(f"{len(components)} component sets for {len(layers)} layers; pass one per layer")
    device = next(model.parameters()).device
    encoded = []
    for item in items:
        prompt, target = render_item(item)
        p_ids = list(tokenizer.encode(prompt))
        t_ids = list(tokenizer.encode(target, add_special_tokens=False))
        encoded.append((p_ids, t_ids[: max(1, 256 - len(p_ids))]))
    outputs: dict[int, torch.Tensor] = {}
    handles = [
        adapter.mlp_module(layer).register_forward_hook(
            lambda _m, _i, out, layer=layer: outputs.__setitem__(
                layer, (out[0] if isinstance(out, tuple) else out).detach()
            )
        )
        for layer in layers
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    k = components[0].k
    result = np.zeros((len(items), len(layers), k), dtype=np.float64)
    try:
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            seqs = [p + t[:-1] if len(t) > 1 else p for p, t in batch]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
            for r, (p, t) in enumerate(batch):
                lo, hi = len(p) - 1, len(p) - 1 + len(t)
                for li, layer in enumerate(layers):
                    out = outputs[layer][r, lo:hi].float()
                    comps = components[li].components.to(out.device, torch.float32)
                    result[start + r, li] = concept_activation(out, comps).double().cpu().numpy()
    finally:
        for handle in handles:
            handle.remove()
    return result


def load_or_compute_activations(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    components: Sequence[FFNComponents],
    cache_path: Path | None,
    layers: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """`item_activations` on the shipped items and their categories, cached at `cache_path` when given."""
    items = instruct_items()
    categories = [str(item["category"]) for item in items]
    digest = hashlib.sha256(
        np.concatenate([c.components.detach().cpu().float().numpy().ravel() for c in components]).tobytes()
        + json.dumps([item["id"] for item in items]).encode()
    ).hexdigest()[:16]
    if cache_path is not None and cache_path.is_file():
        try:
            with np.load(cache_path, allow_pickle=False) as data:
                if str(data["digest"]) == digest:
                    return np.array(data["activations"]), categories
        except (OSError, ValueError, KeyError) as err:
            logger.warning("FFN validity cache %s is unreadable (%s); recomputing", cache_path, err)
    logger.info("FFN concept validity: %d %s items through the model", len(items), ITEMS_SOURCE)
    acts = item_activations(model, tokenizer, components, items, layers)
    if cache_path is not None:
        atomic_write(cache_path, lambda h: np.savez(h, activations=acts, digest=np.array(digest)))
    return acts, categories


# -- AUC
# ---------------------------------------------------------------------------------------------------------
def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC: the chance that a positive item scores above a negative one (ties count half)."""
    from scipy.stats import rankdata

    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError(f"AUC needs positive and negative items, got {n1} and {n0}")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def bootstrap_auc(
    scores: np.ndarray, positive: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of the AUC, resampling positives and negatives separately (stratified)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~np.asarray(positive, dtype=bool))
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        values.append(auc(scores[idx], np.isin(idx, pos)))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def concept_item_shares(activations: np.ndarray, labels: Sequence[Sequence[str]], concept: str) -> np.ndarray:
    """Per item: the concept's share, the mean over layers of the activation on its components (as the
    per-example probe computes it)."""
    mask = np.array([[lab == concept for lab in layer] for layer in labels], dtype=np.float64)
    return (activations * mask[None]).sum(axis=2).mean(axis=1)


def measure_validity(
    activations: np.ndarray,
    categories: Sequence[str],
    labels: Sequence[Sequence[str]],
    concepts: Sequence[str],
    labeller_config: dict[str, Any],
    validation_categories: dict[str, list[str]] | None = None,
    min_auc: float = MIN_AUC,
    n_boot: int = 1000,
    seed: int = 0,
) -> FFNValidity:
    """Every concept's validity from the items' component activations and the components' concept labels.

    Args:
        activations: ``items x layers x k`` (`item_activations`).
        categories: each item's category.
        labels: per layer, each component's concept.
        concepts: the concepts to check.
        labeller_config: the labeller's config (recorded).
        validation_categories: concept -> categories (default: ``concepts.json``).
    """
    mapping = load_validation_categories() if validation_categories is None else validation_categories
    cats = np.asarray(categories)
    result = FFNValidity(
        labeller=labeller_config, items=f"{ITEMS_SOURCE} ({len(cats)} items)", min_auc=min_auc
    )
    for concept in concepts:
        own = list(mapping.get(concept, []))
        n_comp = sum(lab == concept for layer in labels for lab in layer)
        positive = np.isin(cats, own)
        entry = ConceptValidity(
            concept, own, n_comp, int(positive.sum()), int((~positive).sum()), None, None, None, False
        )
        if not own or not positive.any():
            entry.reason = f"no {ITEMS_SOURCE} category to validate {concept!r} on (validation_categories)"
        elif n_comp == 0:
            entry.reason = "no component carries it: none beat its null after FDR control"
        else:
            shares = concept_item_shares(activations, labels, concept)
            entry.auc = round(auc(shares, positive), 4)
            lo, hi = bootstrap_auc(shares, positive, n_boot, seed)
            entry.ci_low, entry.ci_high = round(lo, 4), round(hi, 4)
            entry.valid = entry.auc >= min_auc and entry.ci_low > 0.5
            if not entry.valid:
                entry.reason = (
                    f"AUC {entry.auc:.2f} [{lo:.2f}, {hi:.2f}] on its {'+'.join(own)} items vs the others: "
                    f"{'below ' + format(min_auc, '.2f') if entry.auc < min_auc else 'interval reaches 0.5'}"
                )
        result.concepts.append(entry)
    return result
