"""`lm-interp demo`: the whole story on a tiny base/tuned pair built locally, through the real lm-eval path.

1. Build (once; cached) a tiny Llama pretrained on synthetic text and its instruction-tuned copy.
2. Write two lm-eval tasks over the held-out synthetic instructions (generation and multiple choice) into
   ``OUT/tasks`` (they are demo-only, so they are not among the shipped ``interp_*`` tasks).
3. Run both models through ``lm-interp run --model interp-hf`` (lm-eval's own CLI), then
   ``lm-interp compare`` and ``explain-heads`` / ``explain-ffn`` for the global views.
4. Say plainly which of the paper's three findings show up in this pair.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ..explain.ffn import explain_ffn_to_file
from ..explain.heads import explain_heads_to_file
from ..harness.launcher import run_lmeval
from ..harness.variants import write_task_yaml
from ..report import compare
from ..report.findings import FindingCheck
from .build import build_demo_pair

logger = logging.getLogger(__name__)

DEMO_TASKS = ("demo_instruct", "demo_instruct_mc")


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


def findings(results: dict) -> list[str]:
    """One sentence per paper finding and task, from the compare report's results.json (`report.findings`)."""
    return [FindingCheck(**row).sentence() for row in results.get("findings", [])]


def run_demo(
    out: Path, cache_dir: Path | None = None, limit: int | None = None, force: bool = False, recipe=None
) -> int:
    """Build the pair, evaluate both with interp-hf, write the report under `out`; returns an exit code."""
    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir else out / "models"
    models = build_demo_pair(cache_dir, force=force, recipe=recipe)
    logger.info("demo models: base %s, tuned %s", models.base_path, models.tuned_path)
    tasks = write_demo_tasks(out / "tasks", models.heldout_path, models.heldout_mc_path)
    runs = {}
    for label, path in (("base", models.base_path), ("tuned", models.tuned_path)):
        run_dir = out / "runs" / label
        shutil.rmtree(run_dir, ignore_errors=True)
        argv = [
            "run",
            "--model",
            "interp-hf",
            "--model_args",
            f"pretrained={path}",
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
        run_lmeval(argv)
        runs[label] = run_dir
    globals_dir = out / "global"
    for label, path in (("base", models.base_path), ("tuned", models.tuned_path)):
        heads = explain_heads_to_file(
            path, globals_dir / f"heads_{label}.jsonl", dtype="float32", device="cpu"
        )
        logger.info("wrote %s (%d heads)", globals_dir / f"heads_{label}.jsonl", len(heads.heads))
        explain_ffn_to_file(path, globals_dir / f"ffn_{label}.jsonl", dtype="float32", device="cpu")
    report_dir = out / "report"
    compare(
        [runs["base"], runs["tuned"]],
        report_dir,
        labels=["base", "tuned"],
        heads=[globals_dir / "heads_base.jsonl", globals_dir / "heads_tuned.jsonl"],
        ffn=[globals_dir / "ffn_base.jsonl", globals_dir / "ffn_tuned.jsonl"],
    )
    results = json.loads((report_dir / "results.json").read_text())
    print("\nlm-interp demo: does this tiny pair show the paper's findings?")
    stats = models.stats or {}
    evaluation = stats.get("evaluation") or {}
    if evaluation:
        scores = ", ".join(
            f"{label} exact match {ev['exact_match']['overall']:.1%} / multiple choice "
            f"{ev['mc']['overall']:.1%}"
            for label, ev in evaluation.items()
        )
        print(f"  (instruction following on held-out items, measured at build time: {scores})")
    for line in findings(results):
        print("  " + line)
    print(
        '  (the same table is in the report: "The paper\'s findings on these runs"; the global Table 3 and '
        "Table 5 views of heads and FFN rotation are at its end)"
    )
    print(
        f"\nreport: {report_dir / 'report.html'}\n        {report_dir / 'report.md'}\n"
        f"        {report_dir / 'results.json'}"
    )
    return 0
