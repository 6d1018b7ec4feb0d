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

logger = logging.getLogger(__name__)

DEMO_TASKS = ("demo_instruct", "demo_instruct_mc")

_SHIM = (
    "import lm_interp_plugin.harness.model  # noqa: F401\n"
    "from lm_interp_plugin.harness.tasks import InterpTask  # noqa: F401\n"
)


def _task_yaml(name: str, data: Path, multiple_choice: bool) -> str:
    common = (
        f"task: {name}\nclass: !function interp_task.InterpTask\ndataset_path: json\ntest_split: test\n"
        'doc_to_text: "{{instruction}}\\n\\nInput: {{input}}\\n\\nOutput:"\ntarget_delimiter: " "\n'
    )
    if multiple_choice:
        body = ("output_type: multiple_choice\ndoc_to_choice: choices\ndoc_to_target: label\n"
                "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    else:
        body = ('output_type: generate_until\ndoc_to_target: "{{reference}}"\n'
                'generation_kwargs:\n  until: ["\\n", "</s>"]\n  do_sample: false\n  max_gen_toks: 24\n'
                "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
                # the generation starts with the space after "Output:"; the reference does not
                '    regexes_to_ignore: ["^\\\\s+", "\\\\s+$"]\n')
    meta = ("metadata:\n  version: 1.0\n  interp:\n    instruction_fields: [instruction]\n"
            f"    content_fields: [input]\n    data_files: {{test: {json.dumps(str(data))}}}\n")
    return common + body + meta


def write_demo_tasks(folder: Path, heldout: Path, heldout_mc: Path) -> Path:
    """The demo's two task YAMLs (and the `!function` shim beside them) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "interp_task.py").write_text(_SHIM)
    (folder / "demo_instruct.yaml").write_text(_task_yaml("demo_instruct", heldout.resolve(), False))
    (folder / "demo_instruct_mc.yaml").write_text(_task_yaml("demo_instruct_mc", heldout_mc.resolve(), True))
    return folder


def findings(results: dict) -> list[str]:
    """One sentence per paper finding and task, from the compare report's results.json (`report.findings`)."""
    from ..report.findings import FindingCheck

    return [FindingCheck(**row).sentence() for row in results.get("findings", [])]


def run_demo(out: Path, cache_dir: Path | None = None, limit: int | None = None, force: bool = False,
             recipe=None) -> int:
    """Build the pair, evaluate both with interp-hf, write the report under `out`; returns an exit code."""
    from ..cli import run_lmeval
    from ..commands import explain_ffn, explain_heads
    from ..report import compare
    from .build import build_demo_pair

    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir else out / "models"
    models = build_demo_pair(cache_dir, force=force, recipe=recipe)
    logger.info("demo models: base %s, tuned %s", models.base_path, models.tuned_path)
    tasks = write_demo_tasks(out / "tasks", models.heldout_path, models.heldout_mc_path)
    runs = {}
    for label, path in (("base", models.base_path), ("tuned", models.tuned_path)):
        run_dir = out / "runs" / label
        shutil.rmtree(run_dir, ignore_errors=True)
        argv = ["run", "--model", "interp-hf", "--model_args", f"pretrained={path}", "--device", "cpu",
                "--tasks", ",".join(DEMO_TASKS), "--include_path", str(tasks), "--log_samples",
                "--output_path", str(run_dir), "--batch_size", "8"]
        if limit:
            argv += ["--limit", str(limit)]
        run_lmeval(argv)
        runs[label] = run_dir
    globals_dir = out / "global"
    import argparse

    for label, path in (("base", models.base_path), ("tuned", models.tuned_path)):
        common = dict(model=str(path), dtype="float32", device="cpu", revision=None, top_k=None, layers=None)
        explain_heads(argparse.Namespace(**common, out=globals_dir / f"heads_{label}.jsonl", vocab=None,
                                         compare=None))
        explain_ffn(argparse.Namespace(**common, out=globals_dir / f"ffn_{label}.jsonl", k=None, compare=None))
    report_dir = out / "report"
    compare([runs["base"], runs["tuned"]], report_dir, labels=["base", "tuned"],
            heads=[globals_dir / "heads_base.jsonl", globals_dir / "heads_tuned.jsonl"],
            ffn=[globals_dir / "ffn_base.jsonl", globals_dir / "ffn_tuned.jsonl"])
    results = json.loads((report_dir / "results.json").read_text())
    print("\nlm-interp demo: does this tiny pair show the paper's findings?")
    stats = models.stats or {}
    evaluation = stats.get("evaluation") or {}
    if evaluation:
        scores = ", ".join(f"{label} exact match {ev['exact_match']['overall']:.1%} / multiple choice "
                           f"{ev['mc']['overall']:.1%}" for label, ev in evaluation.items())
        print(f"  (instruction following on held-out items, measured at build time: {scores})")
    for line in findings(results):
        print("  " + line)
    print("  (the same table is in the report: \"The paper's findings on these runs\"; the global Table 3 and "
          "Table 5 views of heads and FFN rotation are at its end)")
    print(f"\nreport: {report_dir / 'report.html'}\n        {report_dir / 'report.md'}\n"
          f"        {report_dir / 'results.json'}")
    return 0
