"""Metric families: which per-example metrics share a scale, so each chart has one meaningful axis.

Ablation drops (log-probabilities, often 5-20) and shares (0-1) on one axis make the shares flat bars; the
report draws one chart per family, with the family's unit on the axis and fixed limits where the unit has
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import lm_interp_plugin.interpret.signals  # noqa: F401  (registers every signal's metrics in the table)
from lm_interp_plugin.metric_names import PREFIXES, metric_spec


@dataclass(frozen=True)
class Family:
    """A group of metrics on one scale: `unit` labels the axis, `limits` fixes it when the unit is bounded."""

    key: str
    title: str
    unit: str
    limits: tuple[float, float] | None = None


STOCK = Family("stock", "lm-eval metrics", "lm-eval's per-example value (accuracy: fraction correct, 0-1)")
SCORE = Family(
    "score",
    "instruction importance (the paper's score)",
    "sum of instruction-token densities / log2(2 + #instruction tokens); no fixed maximum",
)
SHARES = Family(
    "shares", "shares of attribution and FFN activation", "share of the example's mass (0-1)", (0.0, 1.0)
)
ATTENTION = Family(
    "attention",
    "instruction attention",
    "attention probability from answer tokens onto instruction tokens (0-1)",
    (0.0, 1.0),
)
LIFT = Family("lift", "instruction attention lift", "ratio to the uniform share |instruction| / M (1 = none)")
LOGPROB = Family(
    "logprob",
    "log-probability drops",
    "nats: log p(target) with the instruction minus without it (positive = it helped)",
)
NATS = Family(
    "nats",
    "divergences, entropies and margins",
    "nats: KL to the reference model, next-token entropy, log p(gold) - log p(best other choice)",
)
FRACTION = Family(
    "fraction",
    "fractions: examples, answer positions, model depth",
    "fraction (0-1): of examples, of target positions, of the model's depth",
    (0.0, 1.0),
)
INDEX = Family(
    "index",
    "layer and position indices",
    "index (0-based): the layer where the answer appears, the first target position the reference differs",
)
OTHER = Family("other", "other interpretation values", "see the metric's definition")

FAMILIES = (STOCK, SCORE, SHARES, ATTENTION, LIFT, LOGPROB, NATS, FRACTION, INDEX, OTHER)


def metric_family(name: str) -> Family:
    """The family of a metric name (``acc``, ``instruction_importance``, ``ablation_drop_removed``, ...): the
    metric table's (`metric_names.METRICS`), stock for a metric not in it."""
    spec = metric_spec(name)
    if spec is None:
        return STOCK if not name.split(",", 1)[0].startswith(PREFIXES) else OTHER
    return _BY_KEY[spec.family]


_BY_KEY = {family.key: family for family in FAMILIES}


def by_family(metrics: list[str]) -> list[tuple[Family, list[str]]]:
    """`metrics` split into families, in `FAMILIES` order, each keeping the metrics' order."""
    groups: dict[str, list[str]] = {}
    for metric in metrics:
        groups.setdefault(metric_family(metric).key, []).append(metric)
    return [(family, groups[family.key]) for family in FAMILIES if family.key in groups]
