"""`lm-interp demo`: the whole story on a tiny base/tuned pair built locally, through the real lm-eval path.

1. Take the tiny base/tuned pair shipped with the package (built once by `build.py`, so the verdicts are the
   same on every machine), or with ``--rebuild`` train one again from the recipe (cached under OUT/models).
2. Write two lm-eval tasks over the held-out synthetic instructions (generation and multiple choice) into
   ``OUT/tasks`` (they are demo-only, so they are not among the shipped ``interp_*`` tasks).
3. Run both models through ``lm-interp run --model interp-hf`` (lm-eval's own CLI), then
   ``lm-interp compare`` and ``explain-heads`` / ``explain-ffn`` for the global views.
4. Say plainly which of the paper's three findings show up in this pair, and, for one that does not, where
   the evidence went instead (read from the runs' records).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..explain.ffn import explain_ffn_to_file
from ..explain.heads import explain_heads_to_file
from ..harness.launcher import run_lmeval
from ..harness.variants import write_task_yaml
from ..methods.importance import importance_density
from ..records import load_records, record_files
from ..report import ComparisonResult, compare
from ..report.analysis import PairedComparison
from ..report.findings import NOT_MEASURABLE, FindingCheck
from ..report.tokens import display_token
from .build import (
    DEFAULT_SEED,
    DemoModels,
    DemoRecipe,
    build_demo_pair,
    shipped_pair,
    shipped_pair_dir,
    torch_threads,
    training_threads,
)
from .shift_lines import shift_lines

logger = logging.getLogger(__name__)

DEMO_TASKS = ("demo_instruct", "demo_instruct_mc")
#: the opt-in signals of the demo runs (``interp_reference`` adds the reference shift)
DEMO_SIGNALS = "logit_lens+contrastive"
#: Beside the shipped pair: the verdicts of rebuilds from its recipe (`benchmarks/demo_robustness.py`).
ROBUSTNESS_NAME = "robustness.json"
#: the p the verdicts of `robustness.json` read (its ``verdict_p``): the report's, Holm-adjusted over the
#: pair's paired tests (`report.corrected.with_holm`); a file without it predates that (uncorrected p) and
#: is not compared
VERDICT_P = "holm"


def _task_config(name: str, data: Path, multiple_choice: bool) -> dict[str, Any]:
    """One demo task: the held-out synthetic instructions as generation or multiple choice."""
    config: dict[str, Any] = {
        "task": name,
        "class": "InterpTask",
        "dataset_path": "json",
        "test_split": "test",
        "doc_to_text": "{{instruction}}\n\nInput: {{input}}\n\nOutput:",
        "target_delimiter": " ",
    }
    if multiple_choice:
        config |= {
            "output_type": "multiple_choice",
            "doc_to_choice": "choices",
            "doc_to_target": "label",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
    else:
        config |= {
            "output_type": "generate_until",
            "doc_to_target": "{{reference}}",
            "generation_kwargs": {"until": ["\n", "</s>"], "do_sample": False, "max_gen_toks": 24},
            # the generation starts with the space after "Output:"; the reference does not
            "metric_list": [
                {
                    "metric": "exact_match",
                    "aggregation": "mean",
                    "higher_is_better": True,
                    "regexes_to_ignore": ["^\\s+", "\\s+$"],
                }
            ],
        }
    config["metadata"] = {
        "version": 1.0,
        "interp": {
            "instruction_fields": ["instruction"],
            "content_fields": ["input"],
            "data_files": {"test": str(data)},
        },
    }
    return config


def write_demo_tasks(folder: Path, heldout: Path, heldout_mc: Path) -> Path:
    """The demo's two task YAMLs (and the `!function` shim beside them) in `folder`."""
    write_task_yaml(folder / "demo_instruct.yaml", _task_config("demo_instruct", heldout.resolve(), False))
    write_task_yaml(
        folder / "demo_instruct_mc.yaml", _task_config("demo_instruct_mc", heldout_mc.resolve(), True)
    )
    return folder


def findings(result: ComparisonResult) -> list[str]:
    """One sentence per paper finding and task, from the comparison (`report.findings`)."""
    return [check.sentence() for check in result.findings]


def demo_pair(
    out: Path,
    cache_dir: Path | None = None,
    rebuild: bool = False,
    force: bool = False,
    recipe: DemoRecipe | None = None,
    seed: int | None = None,
    threads: int | None = None,
) -> DemoModels:
    """The shipped pair, unless a rebuild is asked for (`rebuild`, `force`, a recipe or a seed of its own):
    then one trained from the recipe into `cache_dir` (default OUT/models), reused from there when a finished
    build of the same recipe and seed is there and `force` is off."""
    if not (rebuild or force or recipe is not None or seed is not None or threads is not None):
        return shipped_pair()
    cache_dir = Path(cache_dir) if cache_dir else Path(out) / "models"
    seed = DEFAULT_SEED if seed is None else seed
    return build_demo_pair(cache_dir, force=force, seed=seed, recipe=recipe, threads=threads)


def run_demo(
    out: Path,
    cache_dir: Path | None = None,
    limit: int | None = None,
    force: bool = False,
    recipe: DemoRecipe | None = None,
    rebuild: bool = False,
    seed: int | None = None,
    threads: int | None = None,
) -> int:
    """Evaluate the demo pair (shipped, or rebuilt: see `demo_pair`) with interp-hf, write the report under
    `out`; returns an exit code."""
    out = Path(out)
    models = demo_pair(
        out, cache_dir, rebuild=rebuild, force=force, recipe=recipe, seed=seed, threads=threads
    )
    logger.info("demo models: base %s, tuned %s", models.base_path, models.tuned_path)
    n_threads, why = training_threads()  # the same rule as the training: no more threads than free cores
    logger.info("demo runs with %d torch threads (%s)", n_threads, why)
    with torch_threads(n_threads):
        return _evaluate_and_report(out, models, limit)


def _evaluate_and_report(out: Path, models: DemoModels, limit: int | None) -> int:
    """Both lm-eval runs, the global explanations, the comparison report and the printed verdicts."""
    tasks = write_demo_tasks(out / "tasks", models.heldout_path, models.heldout_mc_path)
    runs = {}
    other = {"base": models.tuned_path, "tuned": models.base_path}  # each run's reference: the other model
    for label, path in (("base", models.base_path), ("tuned", models.tuned_path)):
        run_dir = out / "runs" / label
        shutil.rmtree(run_dir, ignore_errors=True)
        argv = [
            "run",
            "--model",
            "interp-hf",
            "--model_args",
            f"pretrained={path},interp_reference={other[label]},interp_signals={DEMO_SIGNALS}",
            "--device",
            "cpu",
            "--tasks",
            ",".join(DEMO_TASKS),
            "--include_path",
            str(tasks),
            "--log_samples",
            "--output_path",
            str(run_dir),
            "--batch_size",
            "8",
        ]
        if limit:
            argv += ["--limit", str(limit)]
        run_lmeval(argv, builtin_tasks=False)  # the demo's tasks are all in OUT/tasks: skip lm-eval's index
        runs[label] = run_dir
    globals_dir = out / "global"
    for label, path in (("base", models.base_path), ("tuned", models.tuned_path)):
        heads = explain_heads_to_file(
            path, globals_dir / f"heads_{label}.jsonl", dtype="float32", device="cpu"
        )
        logger.info("wrote %s (%d heads)", globals_dir / f"heads_{label}.jsonl", len(heads.heads))
        explain_ffn_to_file(path, globals_dir / f"ffn_{label}.jsonl", dtype="float32", device="cpu")
    report_dir = out / "report"
    result = compare(
        [runs["base"], runs["tuned"]],
        report_dir,
        labels=["base", "tuned"],
        heads=[globals_dir / "heads_base.jsonl", globals_dir / "heads_tuned.jsonl"],
        ffn=[globals_dir / "ffn_base.jsonl", globals_dir / "ffn_tuned.jsonl"],
    )
    print("\nlm-interp demo: does this tiny pair show the paper's findings?")
    stats = models.stats or {}
    folder = models.manifest_path.parent
    ident = f"recipe {stats.get('version')}, seed {stats.get('seed')}"
    ident += f", trained with {stats.get('threads', '?')} thread(s)"
    if folder == shipped_pair_dir():
        print(f"  (models: the pair shipped with lm-interp, {ident}; --rebuild trains one from the recipe)")
    else:
        print(f"  (models: rebuilt in {folder}, {ident})")
    evaluation = stats.get("evaluation") or {}
    if evaluation:
        scores = ", ".join(
            f"{label} exact match {ev['exact_match']['overall']:.1%} / multiple choice "
            f"{ev['mc']['overall']:.1%}"
            for label, ev in evaluation.items()
        )
        print(f"  (instruction following on held-out items, measured at build time: {scores})")
    # the rebuilds ran on every item: a --limit run's verdicts are not comparable with theirs
    robustness = folder / ROBUSTNESS_NAME
    held = None if limit else rebuild_agreement(robustness, result.findings, skip_seed=stats.get("seed"))
    for line, kept in zip(findings(result), held or [None] * len(result.findings)):
        print("  " + line + (f" [same in {kept[0]} of {kept[1]} rebuilds]" if kept and kept[1] else ""))
    if held:
        print(
            "  (rebuilds: the recipe trained again with other seeds, listed in "
            f"{ROBUSTNESS_NAME} beside the pair; a verdict the rebuilds do not share belongs to this pair "
            "more than to the recipe)"
        )
    for line in why_not(result, runs):
        print("  " + line)
    print(
        '  (the same table is in the report: "The paper\'s findings on these runs"; the global Table 3 and '
        "Table 5 views of heads and FFN rotation are at its end)"
    )
    print("\nbase vs tuned, item by item (each run's reference model is the other one):")
    for line in shift_lines(result):
        print("  " + line)
    print(
        '  (in the report: "Answers that flip between base and tuned" and "Base vs tuned: every paired test, '
        'Holm-corrected")'
    )
    print(
        f"\nreport: {report_dir / 'report.html'}\n        {report_dir / 'report.md'}\n"
        f"        {report_dir / 'results.json'}"
    )
    return 0


def _task_paired(result: ComparisonResult, task: str) -> list[PairedComparison]:
    return next((t.paired for t in result.tasks if t.task == task), [])


def _paired(
    result: ComparisonResult, task: str, metric: str, baseline: str, other: str
) -> PairedComparison | None:
    for row in _task_paired(result, task):
        if row.metric == metric and row.baseline == baseline and row.other == other:
            return row
    return None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _fmt(value: float | None) -> str:
    return f"{value:.2f}" if _finite(value) else "n/a"


def top_tokens(run_dir: Path, task: str) -> tuple[str, str, int, int] | None:
    """The prompt token that most often carries an example's highest importance density (the metric's own
    thresholded density), with its part, in how many examples, out of how many; None without records."""
    counts: dict[tuple[str, str], int] = {}
    total = 0
    folders = [run_dir, *(p for p in sorted(Path(run_dir).iterdir()) if p.is_dir())]
    for path in (f for folder in folders for f in record_files(folder)):
        for record in load_records(path):
            if record.task != task or record.role not in ("gold", "generated") or not record.quantised:
                continue
            if not record.quantised[0]:
                continue
            b, p = int(record.params.get("b", 7)), float(record.params.get("p", 4))
            density = importance_density(record.quantised, b=b, p=p)
            if not density.any():
                continue
            m = int(density.argmax())
            key = (display_token(record.prompt_tokens[m]), record.token_parts[m])
            counts[key] = counts.get(key, 0) + 1
            total += 1
    if not counts:
        return None
    (token, part), n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # ties: the first token by name
    return token, part, n, total


def _rounded(value: float | None) -> float:
    """`value` as `_fmt` prints it (2 decimals); None or non-finite as 0."""
    return round(value, 2) if _finite(value) else 0.0


def _shares(result: ComparisonResult, task: str, prefix: str, baseline: str, other: str) -> str:
    """`part base -> other` for every paired metric named `prefix<part>`, largest move first."""
    rows = [
        row
        for row in _task_paired(result, task)
        if row.metric.startswith(prefix) and row.baseline == baseline and row.other == other
    ]
    # by the printed move (2 decimals), then by name: a 7e-11 difference between two printed 0.00 -> 0.00
    # rows must not decide their order, or the line differs between machines
    rows.sort(key=lambda r: (-abs(_rounded(r.mean_other) - _rounded(r.mean_baseline)), r.metric))
    return ", ".join(
        f"{row.metric[len(prefix) :]} {_fmt(row.mean_baseline)} -> {_fmt(row.mean_other)}" for row in rows
    )


def why_not(result: ComparisonResult, runs: dict[str, Path]) -> list[str]:
    """For each finding that does not show up, where the evidence went instead, read from the paired
    per-example metrics and the records (demo text only; the report has its own tables)."""
    lines = []
    for row in result.findings:
        if row.verdict == "shows up":
            continue
        task, base, other = row.task, row.baseline, row.other
        head = f"why not {row.finding} [{task}]: "
        if row.verdict == "not significant":
            paired = _paired(result, task, row.metric, base, other)
            ci = ""
            if paired is not None and _finite(paired.diff_ci_low):
                lo, hi = _fmt(paired.diff_ci_low), _fmt(paired.diff_ci_high)
                ci = f", 95% CI of the difference [{lo}, {hi}] holds 0"
            head += f"the per-example difference is {row.mean_diff:+.3f} on n={row.n_pairs}{ci}; "
        if row.finding == 1:
            text = _shares(result, task, "attribution_share_", base, other)
            tops = []
            for label in (base, other):
                top = top_tokens(runs[label], task) if label in runs else None
                if top:
                    token, part, n, total = top
                    tops.append(f"{label} {token!r} ({part}) in {n}/{total}")
            line = f"share of the importance density per prompt part: {text}" if text else ""
            if tops:
                line += ("; " if line else "") + "most often the top token: " + ", ".join(tops)
            lines.append(head + (line or "no per-part shares in the records"))
        elif row.finding == 2:
            lift = _paired(result, task, "instruction_attention_lift", base, other)
            means = next((t.attention_means for t in result.tasks if t.task == task), {})
            layers = []
            for label in (base, other):
                grid = means.get(label)
                if grid:
                    layers.append(f"{label} " + " ".join(f"{sum(r) / len(r):.2f}" for r in grid))
            text = (
                f"attention on the instruction relative to its share of the prompt (1 = no preference): "
                f"{_fmt(lift.mean_baseline)} -> {_fmt(lift.mean_other)}"
                if lift
                else ""
            )
            if layers:
                text += ("; " if text else "") + "per layer, first to last: " + "; ".join(layers)
            lines.append(head + (text or "no attention records"))
        elif row.finding == 3 and row.explanation:  # not measurable: the labels are not valid on the model
            lines.append(head + row.explanation)
        elif row.finding == 3:
            text = _shares(result, task, "ffn_concept_", base, other)
            lines.append(head + f"FFN activation share per concept: {text or 'no concept records'}")
    return lines


def rebuild_agreement(
    path: Path, checks: Sequence[FindingCheck], skip_seed: int | None = None
) -> list[tuple[int, int]] | None:
    """Per finding check (in order): in how many of the recorded rebuilds the same task and finding
    got the same verdict, and how many rebuilds recorded it; None without a readable robustness file.
    Rebuilds with `skip_seed` (the pair's own seed: the same weights again) are not counted."""
    try:
        recorded = json.loads(Path(path).read_text())
        rebuilds = recorded["rebuilds"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if recorded.get("limit"):  # rebuilds run on a subset say little about a run on every item
        return None
    if recorded.get("verdict_p") != VERDICT_P:  # read on another p than this run's verdicts: stale
        logger.warning(
            "%s: its verdicts read the %s p, this run's the Holm p: not compared (rebuild it with "
            "benchmarks/demo_recipe_sweep.py --summary)",
            path,
            recorded.get("verdict_p", "uncorrected"),
        )
        return None
    rebuilds = [r for r in rebuilds if skip_seed is None or r.get("seed") != skip_seed]
    counts = []
    for row in checks:
        if row.verdict == NOT_MEASURABLE:  # the rebuilds' verdicts predate the validity check
            counts.append((0, 0))
            continue
        key = f"{row.task}/{row.finding}"
        seen = [r["verdicts"][key] for r in rebuilds if key in r.get("verdicts", {})]
        counts.append((sum(v == row.verdict for v in seen), len(seen)))
    return counts if any(n for _, n in counts) else None
