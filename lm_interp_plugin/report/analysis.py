"""Pair runs per task on ``doc_hash`` and compute the report's numbers (no plotting, no rendering).

Runs are joined on lm-eval's ``doc_hash`` (sha256 of the document), never on ``doc_id``: the same document
can have different ids when a dataset was reordered, filtered or sampled with ``--limit``/``--samples``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lm_interp_plugin.fingerprint import differing_fields
from lm_interp_plugin.interpret.settings import HOW_NOT_WHAT
from lm_interp_plugin.methods import stats
from lm_interp_plugin.metric_names import (
    INSTRUCTION_ATTENTION,
    INSTRUCTION_FOUND,
    INSTRUCTION_IMPORTANCE,
    is_interp_metric,
)

from .errors import NoOverlapError, NoSharedTaskError
from .loading import Run, TaskRun
from .notes import warning

#: Per-example metrics that say whether an answer was right, in order of preference.
CORRECTNESS_METRICS = ("acc", "exact_match", "acc_norm")
#: Fingerprint fields that name the model itself and are expected to differ between base and tuned.
EXPECTED_TO_DIFFER = ("model", "revision", "weight", "hash", "path", "name", "commit", "date", "time", "host")
# not settings but per-request outcomes (``auto`` picks the mode per request; "none" for an empty target), or
# settings of how the values are computed that do not change them (`InterpSettings` field metadata)
NOT_COMPARED = ("params.mode", *(f"settings.{name}" for name in sorted(HOW_NOT_WHAT)))
PROMPT_CHARS = 300


def metric_kind(name: str) -> str:
    """``"interp"`` for lm-interp's scalars, ``"stock"`` for lm-eval's own metrics."""
    return "interp" if is_interp_metric(name) else "stock"


def _base_name(metric: str) -> str:
    return metric.split(",", 1)[0]


@dataclass
class MetricSummary:
    """A leaderboard cell: the mean of a per-example metric with a bootstrap 95% CI."""

    metric: str
    kind: str
    n: int
    mean: float
    ci_low: float
    ci_high: float
    std: float
    reported: float | None = None
    reported_stderr: float | None = None


@dataclass
class PairedComparison:
    """One metric of one task, a run against the baseline, on the examples both scored."""

    task: str
    metric: str
    baseline: str
    other: str
    n_pairs: int
    mean_baseline: float
    mean_other: float
    mean_diff: float
    diff_ci_low: float
    diff_ci_high: float
    paired_t: dict[str, Any]
    wilcoxon: dict[str, Any]
    welch: dict[str, Any]


@dataclass
class CorrectnessSplit:
    """The paper's Table 1 form: an interpretation metric on correct vs incorrect answers of one run."""

    task: str
    run: str
    metric: str
    correctness_metric: str
    n_correct: int
    n_incorrect: int
    mean_correct: float
    mean_incorrect: float
    welch: dict[str, Any]


@dataclass
class ExampleShift:
    """How one shared example moved from the baseline to another run."""

    task: str
    other: str
    key: str
    doc_id_baseline: int
    doc_id_other: int
    prompt: str
    deltas: dict[str, float]
    baseline_values: dict[str, float]
    other_values: dict[str, float]
    ffn_jsd: float | None = None


@dataclass
class Overlap:
    """How many documents of a task two runs share."""

    task: str
    baseline: str
    other: str
    n_baseline: int
    n_other: int
    n_shared: int


@dataclass
class TaskAnalysis:
    """Everything computed for one task."""

    task: str
    runs: list[str]
    leaderboard: dict[str, list[MetricSummary]] = field(default_factory=dict)
    overlaps: list[Overlap] = field(default_factory=list)
    paired: list[PairedComparison] = field(default_factory=list)
    correctness: list[CorrectnessSplit] = field(default_factory=list)
    shifts: list[ExampleShift] = field(default_factory=list)
    attention_means: dict[str, list[list[float]]] = field(default_factory=dict)
    concept_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    layer_concept_shares: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    #: per run, where its rows are not layers 0..L-1 (a hybrid's attention or FFN layers only): the model
    #: layer index of each row of `attention_means` / `layer_concept_shares`
    attention_layers: dict[str, list[int]] = field(default_factory=dict)
    ffn_layers: dict[str, list[int]] = field(default_factory=dict)
    #: per run: the FFN concepts its records leave out (not valid on that model), each with the reason
    ffn_concepts_absent: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite_array(values: list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def summarise(values: list[float], metric: str, reported: dict[str, Any]) -> MetricSummary:
    """Mean, bootstrap 95% CI and spread of one metric, next to lm-eval's own aggregate when it has one."""
    arr = _finite_array(values)
    lo, hi = stats.bootstrap_ci(arr) if arr.size else (math.nan, math.nan)
    key = metric if "," in metric else f"{metric},none"
    name, _, filt = key.partition(",")
    rep = reported.get(key)
    err = reported.get(f"{name}_stderr,{filt}")
    return MetricSummary(
        metric,
        metric_kind(metric),
        int(arr.size),
        float(arr.mean()) if arr.size else math.nan,
        lo,
        hi,
        float(arr.std(ddof=1)) if arr.size > 1 else math.nan,
        None if rep is None else float(rep),
        None if err is None else float(err),
    )


def task_metrics(task_run: TaskRun) -> list[str]:
    """The task's per-example metric names, stock metrics first, each group in first-seen order."""
    names: dict[str, None] = {}
    for sample in task_run.samples.values():
        names.update(dict.fromkeys(sample.metrics))
    return sorted(names, key=lambda m: (metric_kind(m) == "interp", list(names).index(m)))


def _values(task_run: TaskRun, keys: list[str], metric: str) -> np.ndarray:
    return np.array([task_run.samples[k].metrics.get(metric, math.nan) for k in keys], dtype=float)


def compare_pair(
    task: str, base_label: str, base: TaskRun, other_label: str, other: TaskRun, metrics: list[str]
) -> list[PairedComparison]:
    """Paired tests (t, Wilcoxon, bootstrap CI of the mean difference) on shared examples, plus Welch on
    all."""
    shared = sorted(set(base.samples) & set(other.samples))
    out = []
    for metric in metrics:
        a, b = _values(base, shared, metric), _values(other, shared, metric)
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = a[keep], b[keep]
        if a.size == 0:
            continue
        lo, hi = stats.paired_bootstrap_ci(b, a)
        welch = stats.welch_t_test(
            _finite_array(_values(other, list(other.samples), metric)),
            _finite_array(_values(base, list(base.samples), metric)),
        )
        out.append(
            PairedComparison(
                task,
                metric,
                base_label,
                other_label,
                int(a.size),
                float(a.mean()),
                float(b.mean()),
                float((b - a).mean()),
                lo,
                hi,
                stats.paired_t_test(b, a).to_dict(),
                stats.wilcoxon_signed_rank(b, a).to_dict(),
                welch.to_dict(),
            )
        )
    return out


def correctness_splits(
    task: str, label: str, task_run: TaskRun, metrics: list[str]
) -> list[CorrectnessSplit]:
    """For each interpretation metric: its mean on correct vs incorrect answers and a Welch t-test."""
    judge = next((m for pref in CORRECTNESS_METRICS for m in metrics if _base_name(m) == pref), None)
    if judge is None:
        return []
    keys = [k for k, s in task_run.samples.items() if judge in s.metrics]
    correct = np.array([task_run.samples[k].metrics[judge] >= 0.5 for k in keys], dtype=bool)
    out = []
    for metric in metrics:
        if metric_kind(metric) != "interp":
            continue
        vals = _values(task_run, keys, metric)
        good, bad = _finite_array(vals[correct]), _finite_array(vals[~correct])
        if good.size + bad.size == 0:
            continue
        test = stats.welch_t_test(good, bad)
        out.append(
            CorrectnessSplit(
                task,
                label,
                metric,
                judge,
                int(good.size),
                int(bad.size),
                test.mean_a,
                test.mean_b,
                test.to_dict(),
            )
        )
    return out


def _distribution(shares: dict[str, Any], concepts: list[str]) -> np.ndarray:
    vec = np.array([max(float(shares.get(c, 0.0) or 0.0), 0.0) for c in concepts], dtype=float)
    vec[~np.isfinite(vec)] = 0.0
    return vec


def jensen_shannon(p: dict[str, Any], q: dict[str, Any]) -> float | None:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two concept-share dicts, normalised to sum 1."""
    concepts = sorted(set(p) | set(q))
    a, b = _distribution(p, concepts), _distribution(q, concepts)
    if a.sum() <= 0 or b.sum() <= 0:
        return None
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return 0.5 * kl(a) + 0.5 * kl(b)


def primary_metric(metrics: list[str]) -> str | None:
    """The metric examples are ranked by when listing the ones that moved most."""
    if INSTRUCTION_IMPORTANCE in metrics:
        return INSTRUCTION_IMPORTANCE
    interp = [m for m in metrics if metric_kind(m) == "interp"]
    return (interp or metrics or [None])[0]


def example_shifts(task: str, base: TaskRun, other_label: str, other: TaskRun) -> list[ExampleShift]:
    """Per shared example: other-minus-baseline change of every metric, and the FFN concept-share JSD."""
    out = []
    for key in sorted(set(base.samples) & set(other.samples)):
        sa, sb = base.samples[key], other.samples[key]
        deltas = {m: sb.metrics[m] - sa.metrics[m] for m in sa.metrics if m in sb.metrics}
        ra, rb = base.primary_record(key), other.primary_record(key)
        jsd = None
        if ra is not None and rb is not None:
            pa, pb = ra.ffn.get("concept_shares"), rb.ffn.get("concept_shares")
            if isinstance(pa, dict) and isinstance(pb, dict) and pa and pb:
                jsd = jensen_shannon(pa, pb)
        out.append(
            ExampleShift(
                task,
                other_label,
                key,
                sa.doc_id,
                sb.doc_id,
                _clip_prompt(sa.prompt),
                deltas,
                dict(sa.metrics),
                dict(sb.metrics),
                jsd,
            )
        )
    return out


def _clip_prompt(text: str) -> str:
    """The start of a prompt, enough to recognise it (full few-shot prompts would bloat results.json)."""
    return text if len(text) <= PROMPT_CHARS else text[: PROMPT_CHARS - 1] + "\u2026"


def rank_shifts(shifts: list[ExampleShift], metric: str | None) -> list[ExampleShift]:
    """Shifts sorted by the absolute change of `metric` (then FFN JSD), largest first; exact ties by key."""

    def size(s: ExampleShift) -> tuple[float, float]:
        d = s.deltas.get(metric, math.nan) if metric else math.nan
        return (abs(d) if math.isfinite(d) else -1.0, s.ffn_jsd if s.ffn_jsd is not None else -1.0)

    return sorted(sorted(shifts, key=lambda s: s.key), key=size, reverse=True)  # stable: ties keep key order


def _mean_matrix(mats: list[Any]) -> list[list[float]] | None:
    arrays = [np.asarray(m, dtype=float) for m in mats if m is not None]
    arrays = [a for a in arrays if a.ndim == 2 and a.size]
    if not arrays or len({a.shape for a in arrays}) != 1:
        return None
    return np.nanmean(np.stack(arrays), axis=0).tolist()


def _mean_shares(dicts: list[dict[str, Any]]) -> dict[str, float]:
    concepts = sorted({c for d in dicts for c in d})
    if not concepts:
        return {}
    mat = np.stack([_distribution(d, concepts) for d in dicts])
    return dict(zip(concepts, mat.mean(axis=0).tolist()))


def _record_aggregates(analysis: TaskAnalysis, label: str, task_run: TaskRun, keys: list[str]) -> None:
    """Mean instruction-attention map and mean FFN concept shares over `keys` (the shared examples)."""
    recs = [task_run.primary_record(k) for k in keys]
    recs = [r for r in recs if r is not None]
    att = _mean_matrix([r.attention.get(INSTRUCTION_ATTENTION) for r in recs if r.attention])
    if att is not None:
        analysis.attention_means[label] = att
        rows = _row_layers([r.attention for r in recs if r.attention], len(att))
        if rows is not None:
            analysis.attention_layers[label] = rows
    shares = [r.ffn["concept_shares"] for r in recs if isinstance(r.ffn.get("concept_shares"), dict)]
    if shares:
        analysis.concept_shares[label] = _mean_shares(shares)
    absent = next(
        (r.ffn["concepts_absent"] for r in recs if isinstance(r.ffn.get("concepts_absent"), dict)), None
    )
    if absent:
        analysis.ffn_concepts_absent[label] = {str(k): str(v) for k, v in absent.items()}
    layered = [r.ffn.get("layer_concept_shares") for r in recs]
    layered = [x for x in layered if isinstance(x, list) and x and all(isinstance(d, dict) for d in x)]
    if layered and len({len(x) for x in layered}) == 1:
        analysis.layer_concept_shares[label] = [
            _mean_shares([x[i] for x in layered]) for i in range(len(layered[0]))
        ]
        with_rows = [r.ffn for r in recs if isinstance(r.ffn.get("layer_concept_shares"), list)]
        rows = _row_layers(with_rows, len(layered[0]))
        if rows is not None:
            analysis.ffn_layers[label] = rows


def _row_layers(details: list[dict[str, Any]], n_rows: int) -> list[int] | None:
    """The model layer of each row, where the records name them (``layers``: a hybrid's attention or FFN
    layers) and all agree; None where rows are layers 0..n-1."""
    named = {tuple(d["layers"]) for d in details if isinstance(d.get("layers"), list)}
    if len(named) != 1:
        return None
    (rows,) = named
    return [int(x) for x in rows] if len(rows) == n_rows else None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = json.dumps(v, sort_keys=True, default=str)
    return out


def run_fingerprint(task_run: TaskRun) -> tuple[dict[str, str], list[str]]:
    """The fingerprint (plus ``params.*``) shared by a run's records of one task, and fields that vary
    inside."""
    seen: dict[str, set[str]] = {}
    for recs in task_run.records.values():
        for rec in recs:
            flat = _flatten(rec.fingerprint)
            flat.update(_flatten(rec.params, "params."))
            for k, v in flat.items():
                seen.setdefault(k, set()).add(v)
    seen = {k: v for k, v in seen.items() if k not in NOT_COMPARED}
    varying = sorted(k for k, v in seen.items() if len(v) > 1)
    return {k: next(iter(v)) for k, v in seen.items() if len(v) == 1}, varying


def fingerprint_warnings(task: str, runs: dict[str, TaskRun], baseline: str) -> list[str]:
    """Warnings for fingerprint fields that differ between runs but should not (plugin version, L/b/p,
    ...)."""
    warnings = []
    prints = {}
    for label, task_run in runs.items():
        if not task_run.records:
            continue
        prints[label], varying = run_fingerprint(task_run)
        for name in varying:
            warnings.append(f"{task}: fingerprint field '{name}' varies within run {label}'s records")
    if baseline not in prints:
        return warnings
    base = prints[baseline]
    for label, fp in prints.items():
        if label == baseline:
            continue
        for name in differing_fields(base, fp):
            if any(word in name.lower() for word in EXPECTED_TO_DIFFER):
                continue
            warnings.append(
                f"{task}: fingerprint field '{name}' differs: {baseline}={base.get(name, '(absent)')}"
                f", {label}={fp.get(name, '(absent)')}"
            )
    return warnings


def pairing_notes(
    task: str, baseline: str, base: TaskRun, label: str, other: TaskRun, shared: set[str]
) -> list[str]:
    """What makes a pairing of two runs on `task` suspect: the same evaluation twice, documents shown with
    different prompts, or different tokenizers."""
    notes = []
    if base.samples_file is not None and other.samples_file is not None:
        if base.samples_file.resolve() == other.samples_file.resolve():
            notes.append(
                warning(
                    f"{label} and {baseline} are the same evaluation of {task} ({base.samples_file}): "
                    "every difference is zero by construction; compare two different runs"
                )
            )
    prompts = [
        k
        for k in shared
        if base.samples[k].prompt_hash
        and other.samples[k].prompt_hash
        and base.samples[k].prompt_hash != other.samples[k].prompt_hash
    ]
    if prompts:
        notes.append(
            warning(
                f"{len(prompts)} of {len(shared)} shared documents of {task} were shown to {label} and "
                f"{baseline} with different prompts (lm-eval's prompt_hash differs: another few-shot count, "
                "system instruction or chat template?); their differences mix the prompt with the model"
            )
        )
    tokenizers = {
        name: {rec.fingerprint.get("tokenizer_hash") for recs in run.records.values() for rec in recs}
        - {None}
        for name, run in ((baseline, base), (label, other))
    }
    if tokenizers[baseline] and tokenizers[label] and tokenizers[baseline] != tokenizers[label]:
        notes.append(
            f"{label} and {baseline} tokenize {task} differently (tokenizer_hash differs): per-document "
            "scores pair up, but token-level views (heatmaps, attribution per token) do not line up"
        )
    return notes


HALF_PRECISION = ("bfloat16", "float16")


def precision_notes(task: str, runs: dict[str, TaskRun]) -> list[str]:
    """For half-precision runs: how far their attributions were from float32 on the checked requests.

    bf16 moves the matrix by a few percent but the instruction importance by up to ~10% (entries flip across
    quantisation levels; benchmarks/RESULTS.md), so a reader comparing runs needs this scale next to the
    differences.
    """
    notes = []
    for label, task_run in runs.items():
        records = [rec for recs in task_run.records.values() for rec in recs]
        dtypes = {rec.fingerprint.get("dtype") for rec in records} & set(HALF_PRECISION)
        if not dtypes:
            continue
        checks = [
            rec.extras["fp32_check"] for rec in records if isinstance(rec.extras.get("fp32_check"), dict)
        ]
        reruns = sum(1 for rec in records if rec.extras.get("precision"))
        dtype = "/".join(sorted(dtypes))
        if not checks:
            notes.append(
                f"{label} ran in {dtype} and its records carry no float32 check (interp_fp32_check=0): "
                f"the size of the precision effect on {task} is unknown"
            )
            continue
        matrix = float(np.median([c["rel_error"] for c in checks]))
        moves = [
            abs(c["instruction_importance"] - c["instruction_importance_float32"])
            / max(abs(c["instruction_importance_float32"]), 1e-12)
            for c in checks
            if "instruction_importance" in c and "instruction_importance_float32" in c
        ]
        text = (
            f"{label} ran in {dtype}: on {len(checks)} requests checked against float32 the attribution "
            "matrix "
            f"was off by a median {matrix:.1%}"
        )
        if moves:
            text += (
                f" and the instruction importance by a median {float(np.median(moves)):.1%} (max "
                f"{max(moves):.1%}); differences between runs of that size may be precision, not the model"
            )
        if reruns:
            text += f"; {reruns} requests gave NaN/inf and were re-run in float32"
        notes.append(text)
    return notes


def instruction_notes(task: str, runs: dict[str, TaskRun]) -> list[str]:
    """A note per run whose examples of `task` have no instruction: its instruction metrics are left out
    (lm-interp reports none rather than zeros), so the findings on them are missing, not failed."""
    notes = []
    for label, task_run in runs.items():
        found = [
            s.metrics[INSTRUCTION_FOUND] for s in task_run.samples.values() if INSTRUCTION_FOUND in s.metrics
        ]
        if found and not any(found):
            notes.append(
                f"{label}: no instruction in this task's prompts (instruction_found=0 for all {len(found)} "
                "examples): instruction_importance, instruction_attention and the ablation drops are left "
                "out, not 0; rerun with --system_instruction or a task description to measure instruction "
                "reliance"
            )
    return notes


def analyse(runs: list[Run], baseline: str) -> tuple[list[TaskAnalysis], list[str], list[str]]:
    """Leaderboards, pairings, tests and shifts for every task; returns (tasks, notes, fingerprint warnings).

    Raises:
        NoSharedTaskError: another run shares no task with the baseline.
        NoOverlapError: another run shares tasks with the baseline but no document.
    """
    by_label = {r.label: r for r in runs}
    base_run = by_label[baseline]
    notes: list[str] = []
    warnings: list[str] = []
    for run in runs:
        notes.extend(f"{run.label}: {n}" for n in run.notes)
        if run.label != baseline and not set(run.tasks) & set(base_run.tasks):
            raise NoSharedTaskError(
                f"run {run.label} ({run.path}) has tasks {sorted(run.tasks)} and the baseline {baseline} "
                f"({base_run.path}) has {sorted(base_run.tasks)}: no task in common. Evaluate both models on "
                "the same --tasks"
            )
    all_tasks = sorted({t for r in runs for t in r.tasks})
    analyses = []
    shared_total = {r.label: 0 for r in runs if r.label != baseline}
    for task in all_tasks:
        present = {r.label: r.tasks[task] for r in runs if task in r.tasks}
        analysis = TaskAnalysis(task, list(present))
        for label, task_run in present.items():
            analysis.notes.extend(f"{label}: {n}" for n in task_run.notes)
        missing = [r.label for r in runs if task not in r.tasks]
        if missing:
            analysis.notes.append(
                f"task {task} is missing from run(s) {', '.join(missing)}; "
                "only the runs that have it are shown"
            )
        metric_set: dict[str, None] = {}
        for task_run in present.values():
            metric_set.update(dict.fromkeys(task_metrics(task_run)))
        metrics = sorted(metric_set, key=lambda m: (metric_kind(m) == "interp", list(metric_set).index(m)))
        for label, task_run in present.items():
            keys = list(task_run.samples)
            analysis.leaderboard[label] = [
                summarise(list(_values(task_run, keys, m)), m, task_run.reported)
                for m in metrics
                if any(m in task_run.samples[k].metrics for k in keys)
            ]
            analysis.correctness.extend(correctness_splits(task, label, task_run, metrics))
        analysis.notes.extend(precision_notes(task, present))
        analysis.notes.extend(instruction_notes(task, present))
        base = present.get(baseline)
        if base is not None:
            warnings.extend(fingerprint_warnings(task, present, baseline))
            shared_all = set(base.samples)
            for label, task_run in present.items():
                if label == baseline:
                    continue
                shared = set(base.samples) & set(task_run.samples)
                shared_all &= shared
                shared_total[label] += len(shared)
                analysis.overlaps.append(
                    Overlap(task, baseline, label, len(base.samples), len(task_run.samples), len(shared))
                )
                if not shared:
                    analysis.notes.append(
                        warning(
                            f"{label} and {baseline} share no document of {task} "
                            "(joined on doc_hash): different data or prompt versions?"
                        )
                    )
                    continue
                if len(shared) < max(len(base.samples), len(task_run.samples)):
                    analysis.notes.append(
                        f"partial overlap on {task}: {len(shared)} shared documents ({baseline} has "
                        f"{len(base.samples)}, {label} has {len(task_run.samples)}); paired statistics use "
                        "the "
                        "shared ones only"
                    )
                analysis.notes.extend(pairing_notes(task, baseline, base, label, task_run, shared))
                analysis.paired.extend(compare_pair(task, baseline, base, label, task_run, metrics))
                analysis.shifts.extend(example_shifts(task, base, label, task_run))
            keys = sorted(shared_all) if len(present) > 1 else list(base.samples)
            for label, task_run in present.items():
                _record_aggregates(analysis, label, task_run, keys)
        analyses.append(analysis)
    for label, n in shared_total.items():
        if n == 0:
            other = by_label[label]
            raise NoOverlapError(
                f"run {label} ({other.path}) shares no document with the baseline {baseline} "
                f"({base_run.path}) in any common task (joined on lm-eval's doc_hash). The two runs used "
                "different data; evaluate both on the same task version and --limit/--samples"
            )
    return analyses, notes, warnings
