"""A leaderboard of three models through `lm_interp_plugin.report.compare`: base, tuned, and halfway.

    python examples/leaderboard.py [--out DIR] [--limit N]

The third model is made on the fly: every weight halfway between the shipped tiny base model and its
instruction-tuned version (a stand-in for an intermediate checkpoint). The three are run on the demo's two
tasks as `lm-interp run --model interp-hf ... --output_path DIR/runs/<label>` would run them (here in-process,
through `run_lmeval`, which is what `lm-interp run` calls; `builtin_tasks=False` skips indexing lm-eval's own
15,000 task configs, which these tasks do not need), then `compare` pairs them per example against the base
and writes DIR/report/{report.md, report.html, results.json}. Any number of runs works the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_interp_plugin.demo.build import shipped_pair
from lm_interp_plugin.demo.run import DEMO_TASKS, write_demo_tasks
from lm_interp_plugin.harness.launcher import run_lmeval
from lm_interp_plugin.report import compare


def interpolate(base: Path, tuned: Path, out: Path, weight: float = 0.5) -> Path:
    """A model whose every parameter is (1 - weight) * base + weight * tuned, saved with the tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(base)
    other = AutoModelForCausalLM.from_pretrained(tuned).state_dict()
    model.load_state_dict({k: (1 - weight) * v + weight * other[k] for k, v in model.state_dict().items()})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("example_out"), help="runs and report go here")
    parser.add_argument("--limit", type=int, default=12, help="examples per task (default 12)")
    args = parser.parse_args(argv)

    pair = shipped_pair()
    models = {
        "base": pair.base_path,
        "half": interpolate(pair.base_path, pair.tuned_path, args.out / "models" / "half"),
        "tuned": pair.tuned_path,
    }
    tasks = write_demo_tasks(args.out / "tasks", pair.heldout_path, pair.heldout_mc_path)
    runs = []
    for label, path in models.items():
        run_dir = args.out / "runs" / label
        run_lmeval(
            ["run", "--model", "interp-hf", "--model_args", f"pretrained={path}", "--device", "cpu"]
            + ["--tasks", ",".join(DEMO_TASKS), "--include_path", str(tasks), "--limit", str(args.limit)]
            + ["--log_samples", "--output_path", str(run_dir)],
            builtin_tasks=False,
        )
        runs.append(run_dir)
    # examples=1: token heatmaps for the one most-moved example per task and run (the default is 3)
    compare(runs, args.out / "report", labels=list(models), examples=1)
    results = json.loads((args.out / "report" / "results.json").read_text())

    metrics = ("exact_match", "acc", "instruction_importance", "instruction_attention")
    print(f"{'task':<18} {'run':<6} " + " ".join(f"{m:>23}" for m in metrics))
    for task, analysis in sorted(results["tasks"].items()):
        for run, rows in analysis["leaderboard"].items():
            means = {row["metric"]: row["mean"] for row in rows}
            cells = [f"{means[m]:23.3f}" if means.get(m) is not None else f"{'':>23}" for m in metrics]
            print(f"{task:<18} {run:<6} " + " ".join(cells))
    print(f"report: {args.out / 'report' / 'report.html'}")
    return results


if __name__ == "__main__":
    main()
