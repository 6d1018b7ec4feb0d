"""Flips: the items a declared base/tuned pair gets right in one run and wrong in the other.

Mechanisms are enhanced by tuning more than replaced (Prakash et al., ICLR 2024), so the items whose
correctness changes are where to look. Per task, on the documents both runs scored (joined on doc_hash):
the items that go wrong -> right and right -> wrong, each with the tuned-minus-base change of its attribution
share per prompt part, of its instruction attention and of its reference KL (where the runs carry them);
counts of the four cells and the mean change per metric for each flip direction.

Correctness is lm-eval's own per-sample ``acc`` (else ``exact_match``, else ``acc_norm``); >= 0.5 is right.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import metric_names as names
from .analysis import CORRECTNESS_METRICS, PROMPT_CHARS
from .loading import TaskRun

WRONG_TO_RIGHT = "wrong->right"
RIGHT_TO_WRONG = "right->wrong"
#: the reference model's KL on the target tokens (the ``reference_shift`` signal's metric)
REFERENCE_KL = "reference_kl"


def flip_metrics(metrics: list[str] | set[str]) -> list[str]:
    """The metrics whose change a flip reports: attribution shares per part, instruction attention, the
    reference KL; in that order, those present."""
    shares = sorted(m for m in metrics if m.startswith(names.ATTRIBUTION_SHARE_PREFIX))
    rest = [m for m in (names.INSTRUCTION_ATTENTION, REFERENCE_KL) if m in metrics]
    return shares + rest


@dataclass
class FlipItem:
    """One document whose correctness differs between the two runs."""

    key: str
    doc_id: int
    direction: str
    prompt: str
    deltas: dict[str, float]


@dataclass
class TaskFlips:
    """The flips of one task between the base and the tuned run.

    Attributes:
        counts: documents per cell: ``wrong->right``, ``right->wrong``, ``right->right``, ``wrong->wrong``.
        means: per flip direction, the mean tuned-minus-base change of each metric over its items (a metric
            absent from every item of a direction is left out).
    """

    task: str
    base: str
    tuned: str
    correctness_metric: str
    n_shared: int
    counts: dict[str, int]
    metrics: list[str]
    items: list[FlipItem] = field(default_factory=list)
    means: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _judge(base: TaskRun, tuned: TaskRun) -> str | None:
    present = {m for run in (base, tuned) for s in run.samples.values() for m in s.metrics}
    for wanted in CORRECTNESS_METRICS:
        hit = sorted(m for m in present if m.split(",", 1)[0] == wanted)
        if hit:
            return hit[0]
    return None


def _clip(text: str) -> str:
    return text if len(text) <= PROMPT_CHARS else text[: PROMPT_CHARS - 1] + "\u2026"


def task_flips(
    task: str, base_label: str, base: TaskRun, tuned_label: str, tuned: TaskRun
) -> TaskFlips | None:
    """The flips of `task`; None when the task has no correctness metric (nothing can flip)."""
    judge = _judge(base, tuned)
    if judge is None:
        return None
    shared = sorted(
        k
        for k in set(base.samples) & set(tuned.samples)
        if judge in base.samples[k].metrics and judge in tuned.samples[k].metrics
    )
    metrics = flip_metrics(
        {m for k in shared for s in (base.samples[k], tuned.samples[k]) for m in s.metrics}
    )
    counts = {WRONG_TO_RIGHT: 0, RIGHT_TO_WRONG: 0, "right->right": 0, "wrong->wrong": 0}
    items: list[FlipItem] = []
    for key in shared:
        before, after = base.samples[key], tuned.samples[key]
        was, now = before.metrics[judge] >= 0.5, after.metrics[judge] >= 0.5
        cell = f"{'right' if was else 'wrong'}->{'right' if now else 'wrong'}"
        counts[cell] += 1
        if was == now:
            continue
        deltas = {}
        for metric in metrics:
            a, b = before.metrics.get(metric), after.metrics.get(metric)
            if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
                deltas[metric] = float(b - a)
        items.append(FlipItem(key, int(after.doc_id), cell, _clip(after.prompt or before.prompt), deltas))
    means: dict[str, dict[str, float]] = {}
    for direction in (WRONG_TO_RIGHT, RIGHT_TO_WRONG):
        group = [item for item in items if item.direction == direction]
        means[direction] = {
            metric: float(np.mean(values))
            for metric in metrics
            if (values := [item.deltas[metric] for item in group if metric in item.deltas])
        }
    return TaskFlips(task, base_label, tuned_label, judge, len(shared), counts, metrics, items, means)
