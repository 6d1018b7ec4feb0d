"""Base vs tuned FFN explanations as data: rotation per layer, matched components, concept proportions.

``compare_ffn`` -> `FFNComparison`: per-layer principal angles (rotation of the top-k subspace), matched
components with word and label changes, concept proportions per layer group with tests. The report's FFN
section (`report.sections.ffn_global`) draws them as the paper's Table 5 and its figures.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..methods.concepts import NONE, ConceptLabel
from ..methods.ffn import (
    match_components,
    principal_angles,
)
from .ffn import LABEL_KINDS, LAYER_GROUPS, FFNExplanation

logger = logging.getLogger(__name__)


# -- comparison
# --------------------------------------------------------------------------------------------------
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
        categories: the categories (``"none"`` last).
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


def _group_proportions(
    kind: str,
    group: str,
    layers: list[int],
    categories: list[str],
    base_labels: dict[int, list[ConceptLabel]],
    tuned_labels: dict[int, list[ConceptLabel]],
) -> GroupProportions:
    from scipy.stats import chi2_contingency

    def counts(labels_by_layer: dict[int, list[ConceptLabel]]) -> list[int]:
        c = dict.fromkeys(categories, 0)
        for layer in layers:
            for lab in labels_by_layer[layer]:
                value = getattr(lab, kind)
                c[value if value in c else NONE] += 1
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
        categories = [c for c in categories if c != NONE] + [NONE]
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
                        (getattr(x, kind) if getattr(x, kind) in categories else NONE) == cat
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
