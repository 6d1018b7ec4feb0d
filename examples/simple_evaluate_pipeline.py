"""Add interpretability metrics to an existing `lm_eval.simple_evaluate` pipeline: two changes.

    python examples/simple_evaluate_pipeline.py [--out DIR] [--limit N]

An existing pipeline calls `lm_eval.simple_evaluate(model="hf", ...)`. With lm-interp:

1. import `lm_interp_plugin.harness.model` (registers the `interp-hf` model with lm-eval) and say
   `model="interp-hf"`: accuracy is computed exactly as by `hf`, and each example also gets the interp
   metrics;
2. let lm-eval see the plugin's `interp_*` tasks: `TaskManager(include_path=[tasks_dir()])`.

Runs here on the tiny tuned model shipped with lm-interp (replace `pretrained=` with your model) and the
shipped multiple-choice task `interp_instruct_mc`; the per-example records (tokens, matrices, attention, FFN
concepts) go to DIR/records.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lm_eval
from lm_eval.tasks import TaskManager

import lm_interp_plugin.harness.model  # noqa: F401  (change 1a: registers model="interp-hf")
from lm_interp_plugin.demo.build import shipped_pair
from lm_interp_plugin.harness.tasks import tasks_dir


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("example_out"), help="records go to OUT/records")
    parser.add_argument("--limit", type=int, default=8, help="examples of the task (default 8)")
    args = parser.parse_args(argv)

    model_path = shipped_pair().tuned_path
    results = lm_eval.simple_evaluate(
        model="interp-hf",  # change 1b: was "hf"; every hf model argument still works
        model_args=f"pretrained={model_path},records_dir={args.out / 'records'}",
        tasks=["interp_instruct_mc"],
        # change 2; include_defaults=False only because this example needs none of lm-eval's own tasks
        # (indexing their 15,000 configs takes 10 to 40 s); a pipeline that runs them leaves it out
        task_manager=TaskManager(include_path=[str(tasks_dir())], include_defaults=False),
        limit=args.limit,
        log_samples=True,
        device="cpu",
        bootstrap_iters=0,
    )
    scores = results["results"]["interp_instruct_mc"]
    for metric in ("acc", "instruction_importance", "attribution_share_instruction", "instruction_attention"):
        value = scores.get(f"{metric},none")  # absent when undefined on every example (the records say why)
        print(f"{metric:>32}: {'absent' if value is None else f'{value:.3f}'}")
    print("per example (lm-eval's samples carry the same keys):")
    for sample in results["samples"]["interp_instruct_mc"]:
        importance = sample.get("instruction_importance")  # absent where undefined (the record says why)
        shown = "absent" if importance is None else f"{importance:.3f}"
        print(f"  doc {sample['doc_id']:>3}: acc {sample['acc']:.0f}  instruction_importance {shown}")
    print(f"records: {sorted(p.name for p in (args.out / 'records').rglob('*.jsonl'))}")
    return results


if __name__ == "__main__":
    main()
