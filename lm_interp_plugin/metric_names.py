"""Names of the per-example interpretation scalars and the metric table, shared by every layer.

`METRICS` (lm-eval's ``MetricSpec`` sized for lm-interp) holds each scalar's facts once: family and unit (the
report's charts), bounds (the records' range checks), aggregation and direction (lm-eval's table), and a
one-line meaning (README's metric table, checked by a test). A signal registers its own metrics with
`register_metric`. Anything not in the table is a stock lm-eval metric (acc, acc_norm, exact_match, ...). One
name per idea across code, YAML, JSONL and report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: the prefixes of the built-in metrics (kept for importers; `metric_spec` reads the table, which is complete)
PREFIXES = ("instruction_", "attribution_", "attention_", "ffn_", "ablation_", "ig_", "deletion_")

# attribution (the paper's score and our normalised companions)
INSTRUCTION_IMPORTANCE = "instruction_importance"  # paper: sum of densities on instruction / log2(2 + n)
ATTRIBUTION_SHARE_PREFIX = "attribution_share_"  # + part: share of the density mass on that prompt part
INSTRUCTION_FOUND = "instruction_found"  # 1 when the prompt has instruction tokens; else the instruction
#                                         metrics are absent for the example (never 0)
# attention
INSTRUCTION_ATTENTION = "instruction_attention"  # mean over layers, heads, targets of mass on instruction
INSTRUCTION_ATTENTION_LIFT = "instruction_attention_lift"  # the same over the uniform share |instr| / M
# FFN concepts
FFN_CONCEPT_PREFIX = "ffn_concept_"  # + concept: share of the concept-activation mass on that concept
FFN_CONCEPT_OTHER = FFN_CONCEPT_PREFIX + "other"  # the share on components of no user-task concept
# whether the instruction was located in the prompt (1/0); the instruction metrics exist only where it was
INSTRUCTION_FOUND = "instruction_found"
# faithfulness signals beside the paper's score
ABLATION_DROP_REMOVED = "ablation_drop_removed"  # log p(target) with the instruction minus without it
ABLATION_DROP_REPLACED = "ablation_drop_replaced"  # ... minus with it replaced by neutral tokens
ABLATION_DROP_REMOVED_PER_TOKEN = "ablation_drop_removed_per_token"  # the removed drop / target length
IG_PREFIX = "ig_"  # + an attribution metric name: the same metric from integrated gradients
IG_COMPLETENESS_ERROR = "ig_completeness_error"  # relative gap of integrated gradients' completeness check
DELETION_AREA_PREFIX = "deletion_area_"  # + method: area of the log-prob drop along the deletion curve
DELETION_GAIN_PREFIX = "deletion_gain_"  # + method: that area's gain over random deletion orders


# -- the metric table
# ------------------------------------------------------------------------------------------------
Aggregation = Literal["mean"]
#: family keys (`report.families` titles them): metrics of one family share a unit and one chart axis
FAMILY_KEYS = ("score", "shares", "attention", "lift", "logprob", "nats", "fraction", "index", "other")


@dataclass(frozen=True)
class MetricSpec:
    """One per-example scalar (or a prefix naming a family of them), with everything every reader needs.

    Attributes:
        name: the full name, or a prefix ending in ``_`` when `placeholder` is set (``attribution_share_``).
        family: the report's chart family (one of `FAMILY_KEYS`): which metrics share an axis.
        unit: what one unit of the value is (nats, share, ratio, ...).
        bounds: (low, high) every value lies in (None = open); records outside them are invalid.
        aggregation: how lm-eval aggregates it over the samples that report it.
        higher_is_better: lm-eval's up/down column and the direction of the paper's findings (for the
            instruction metrics: the instruction-tuned model's side); None = no better direction.
        meaning: one line, for README's metric table and the report.
        placeholder: for a prefix, what follows it (``part``, ``concept``, ``method``); README shows
            ``<prefix><placeholder>``.
        wraps: a prefix whose rest is another metric's name (``ig_``: the same metric by another method);
            its family, unit, bounds and direction are those of the wrapped metric.
        bounded_by_prompt: the value is at most the number of prompt tokens (instruction importance).
    """

    name: str
    family: str
    unit: str
    meaning: str
    bounds: tuple[float | None, float | None] = (None, None)
    aggregation: Aggregation = "mean"
    higher_is_better: bool | None = None
    placeholder: str | None = None
    wraps: bool = False
    bounded_by_prompt: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILY_KEYS:
            raise ValueError(f"metric {self.name!r}: family {self.family!r} is not one of {FAMILY_KEYS}")
        if (self.placeholder is not None or self.wraps) and not self.name.endswith("_"):
            raise ValueError(f"metric prefix {self.name!r} must end with '_'")

    @property
    def is_prefix(self) -> bool:
        return self.placeholder is not None or self.wraps

    @property
    def readme_name(self) -> str:
        """How README's metric table names it: the name, or ``prefix<placeholder>``."""
        if self.wraps:
            return f"{self.name}<metric>"
        return self.name + (f"<{self.placeholder}>" if self.placeholder else "")


METRICS: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add a metric to the table (a signal's module does this for the metrics it computes). Registering the
    same spec again is a no-op; another spec under a taken name is an error."""
    known = METRICS.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"metric {spec.name!r} is registered already, differently: {known}")
    METRICS[spec.name] = spec
    return spec


def metric_spec(name: str) -> MetricSpec | None:
    """The table's entry for a metric name (lm-eval's ``name,filter`` form too): an exact name first, then the
    longest matching prefix; a wrapping prefix (``ig_``) answers with the wrapped metric's entry. None for a
    stock lm-eval metric."""
    base = name.split(",", 1)[0]
    spec = METRICS.get(base)
    if spec is not None and not spec.is_prefix:
        return spec
    for prefix in sorted((s for s in METRICS.values() if s.is_prefix), key=lambda s: -len(s.name)):
        if base.startswith(prefix.name) and len(base) > len(prefix.name):
            return metric_spec(base[len(prefix.name) :]) if prefix.wraps else prefix
    return None


def is_interp_metric(name: str) -> bool:
    """True for a scalar that lm-interp adds, False for a stock lm-eval metric."""
    return metric_spec(name) is not None or name.split(",", 1)[0].startswith(PREFIXES)


_SHARE = "share of the example's mass (0-1)"
_NATS = "nats (log-probability)"
for _spec in (
    MetricSpec(
        INSTRUCTION_IMPORTANCE,
        "score",
        "sum of instruction-token densities / log2(2 + #instruction tokens)",
        "the paper's score: the instruction tokens' importance density, length-normalised",
        bounds=(0.0, None),
        higher_is_better=True,  # the paper's reading: more reliance on the instruction
        bounded_by_prompt=True,
    ),
    MetricSpec(
        ATTRIBUTION_SHARE_PREFIX,
        "shares",
        _SHARE,
        "share of the density mass on each prompt part",
        bounds=(0.0, 1.0),
        placeholder="part",
    ),
    MetricSpec(
        INSTRUCTION_FOUND,
        "fraction",
        "1/0 per example; its mean is the share of examples with an instruction",
        "1 if the prompt has instruction tokens, else 0",
        bounds=(0.0, 1.0),
    ),
    MetricSpec(
        INSTRUCTION_ATTENTION,
        "attention",
        "attention probability (0-1)",
        "mean over layers, heads and answer positions of the attention on instruction tokens",
        bounds=(0.0, 1.0),
        higher_is_better=True,  # the paper's reading: more attention to the instruction
    ),
    MetricSpec(
        INSTRUCTION_ATTENTION_LIFT,
        "lift",
        "ratio to the uniform share |instruction| / M (1 = none)",
        "instruction attention over the uniform share",
        bounds=(0.0, None),
    ),
    MetricSpec(
        FFN_CONCEPT_PREFIX,
        "shares",
        _SHARE,
        "share of the FFN activation on components of each concept valid on the model, averaged over layers "
        "(absent for a concept not valid on it)",
        bounds=(0.0, 1.0),
        placeholder="concept",
    ),
    MetricSpec(
        FFN_CONCEPT_OTHER,
        "shares",
        _SHARE,
        "share of the FFN activation on components without a valid concept (absent when none is valid)",
        bounds=(0.0, 1.0),
        higher_is_better=False,  # the paper's reading: tuning moves activation toward user-task concepts
    ),
    MetricSpec(
        ABLATION_DROP_REMOVED,
        "logprob",
        _NATS,
        "log p(target) with the instruction minus with it removed",
    ),
    MetricSpec(
        ABLATION_DROP_REPLACED,
        "logprob",
        _NATS,
        "log p(target) with the instruction minus with it replaced by neutral tokens",
    ),
    MetricSpec(
        ABLATION_DROP_REMOVED_PER_TOKEN,
        "logprob",
        "nats per target token",
        "the removed drop divided by the target length",
    ),
    MetricSpec(
        IG_PREFIX,
        "other",
        "that of the wrapped metric",
        "an attribution metric computed from integrated gradients",
        wraps=True,
    ),
    MetricSpec(
        IG_COMPLETENESS_ERROR,
        "other",
        "relative error (0 = exact)",
        "relative gap of integrated gradients' completeness check",
        bounds=(0.0, None),
        higher_is_better=False,
    ),
    MetricSpec(
        DELETION_AREA_PREFIX,
        "logprob",
        "nats x deleted fraction",
        "area of the log-prob drop along the deletion curve of each attribution method (lower = faithful)",
        higher_is_better=False,
        placeholder="method",
    ),
    MetricSpec(
        DELETION_GAIN_PREFIX,
        "logprob",
        "nats x deleted fraction",
        "the deletion area's gain over random deletion orders (positive = the method finds what matters)",
        higher_is_better=True,
        placeholder="method",
    ),
):
    register_metric(_spec)
