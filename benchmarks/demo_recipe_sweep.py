"""Which demo recipe gives the same verdicts for every seed? Recipes x seeds, built and run in parallel.

    python benchmarks/demo_recipe_sweep.py --out /tmp/sweep --seeds 0 1 2 3 \
        --variant v1='{}' --variant words='{"word_tasks": true}' [--jobs N] [--cores 4-15] [--budget S]

Each (variant, seed) is `lm-interp demo --rebuild` of `DemoRecipe(**overrides)` with that seed, one torch
thread, in its own subprocess and folder (`OUT/<variant>/seed<S>`), so N of them run at once (one per core;
`--cores` pins them with `taskset`, leaving the other cores to other work). A finished one is reused on a
second call. Prints, and writes to OUT/sweep.json, per variant: each seed's held-out accuracies, build time
and six verdicts (3 findings x 2 tasks), and per (task, finding) whether all seeds agree. Jobs still running
when `--budget` seconds have passed are stopped and reported as unfinished.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # demo_robustness.py, beside this script

SHORT = {
    "shows up": "+",
    "opposite": "-",
    "not significant": "0",
    "untested": "?",
    "not measurable on this model": "n",  # finding 3 where no FFN concept is valid (issue 22)
}


def one(folder: Path, overrides: dict, seed: int) -> None:
    """Build and run one configuration in this process (what each subprocess does)."""
    import logging

    from lm_interp_plugin.demo.build import DemoRecipe
    from lm_interp_plugin.demo.run import run_demo

    logging.basicConfig(level=logging.WARNING)
    run_demo(folder, recipe=DemoRecipe(**overrides), seed=seed, threads=1)


#: what `collect` keeps of each finding of a rebuild's report
FINDING_KEYS = ("finding", "task", "mean_baseline", "mean_other", "p_value", "p_holm", "verdict")


def collect(folder: Path) -> dict | None:
    """A finished configuration's build stats and verdicts, or None."""
    results = folder / "report" / "results.json"
    manifests = sorted((folder / "models").glob("demo-*/demo_manifest.json"))
    if not results.is_file() or not manifests:
        return None
    manifest = json.loads(manifests[0].read_text())
    findings = json.loads(results.read_text())["findings"]
    return {
        "evaluation": manifest.get("evaluation"),
        "build_seconds": (manifest.get("seconds") or {}).get("total"),
        "findings": [{k: f.get(k) for k in FINDING_KEYS} for f in findings],
    }


def _cores(spec: str | None) -> list[str]:
    if not spec:
        return []
    cores = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cores += [str(c) for c in range(int(lo), int(hi or lo) + 1)]
    return cores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON recipe overrides")
    parser.add_argument("--jobs", type=int, default=None, help="parallel builds (default: the cores)")
    parser.add_argument("--cores", default=None, help="pin the builds to these cores, e.g. 4-15")
    parser.add_argument("--budget", type=float, default=None, help="stop unfinished builds after S seconds")
    parser.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="also write the first variant's verdicts in the form `lm-interp demo` reads beside the shipped "
        "pair (lm_interp_plugin/data/demo_pair/robustness.json)",
    )
    parser.add_argument("--machine", default=None, help="where the builds ran, for --summary")
    parser.add_argument("--one", nargs=3, metavar=("FOLDER", "JSON", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        one(Path(args.one[0]), json.loads(args.one[1]), int(args.one[2]))
        return 0
    variants = dict(v.split("=", 1) for v in args.variant) or {"default": "{}"}
    cores = _cores(args.cores)
    jobs = args.jobs or len(cores) or os.cpu_count() or 1
    todo = [(name, seed) for seed in args.seeds for name in variants]
    env = {
        **os.environ,
        "LM_INTERP_DEMO_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    running: dict[tuple[str, int], tuple[subprocess.Popen, str | None, float]] = {}
    seconds: dict[tuple[str, int], float] = {}
    start = time.perf_counter()
    free = list(cores)
    while todo or running:
        while todo and len(running) < jobs:
            name, seed = todo.pop(0)
            folder = args.out / name / f"seed{seed}"
            if collect(folder):
                continue
            folder.mkdir(parents=True, exist_ok=True)
            core = free.pop(0) if free else None
            cmd = [
                sys.executable,
                __file__,
                "--out",
                str(args.out),
                "--one",
                str(folder),
                variants[name],
                str(seed),
            ]
            if core is not None:
                cmd = ["taskset", "-c", core, *cmd]
            log = (folder / "log.txt").open("w")
            running[(name, seed)] = (
                subprocess.Popen(cmd, stdout=log, stderr=log, env=env),
                core,
                time.perf_counter(),
            )
        time.sleep(2)
        for key, (proc, core, t0) in list(running.items()):
            over = args.budget is not None and time.perf_counter() - start > args.budget
            if proc.poll() is None and not over:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            seconds[key] = round(time.perf_counter() - t0, 1)
            print(
                f"[{time.perf_counter() - start:6.0f} s] {key[0]} seed {key[1]}: exit {proc.returncode}",
                flush=True,
            )
            del running[key]
            if core is not None:
                free.append(core)

    summary: dict = {"seeds": args.seeds, "variants": {}}
    for name, overrides in variants.items():
        rows = {}
        for seed in args.seeds:
            got = collect(args.out / name / f"seed{seed}")
            if got:
                got["wall_seconds"] = seconds.get((name, seed))
            rows[seed] = got
        done = [r for r in rows.values() if r]
        agree = {}
        if done:
            for i, f in enumerate(done[0]["findings"]):
                verdicts = [r["findings"][i]["verdict"] for r in done]
                agree[f"{f['task']}/{f['finding']}"] = {
                    "verdicts": verdicts,
                    "all_agree": len(set(verdicts)) == 1,
                }
        summary["variants"][name] = {"overrides": json.loads(overrides), "seeds": rows, "agreement": agree}
        print(f"\n{name} {overrides}")
        print("| seed | wall s | base EM / MC | tuned EM / MC | instruct 1 2 3 | mc 1 2 3 |")
        print("|---:|---:|---:|---:|:---:|:---:|")
        for seed, row in rows.items():
            if not row:
                print(f"| {seed} | unfinished | | | | |")
                continue
            ev = row["evaluation"]
            acc = {m: f"{ev[m]['exact_match']['overall']:.0%} / {ev[m]['mc']['overall']:.0%}" for m in ev}
            by_task: dict[str, list[str]] = {}
            for f in row["findings"]:
                by_task.setdefault(f["task"], []).append(SHORT[f["verdict"]])
            cells = " | ".join(" ".join(v) for v in by_task.values())
            print(f"| {seed} | {row['wall_seconds']} | {acc.get('base')} | {acc.get('tuned')} | {cells} |")
        for key, value in agree.items():
            print(f"  {key}: {' '.join(SHORT[v] for v in value['verdicts'])} all agree: {value['all_agree']}")
    (args.out / "sweep.json").write_text(json.dumps(summary, indent=2))
    if args.summary:
        name = next(iter(variants))
        args.summary.write_text(json.dumps(robustness_summary(summary, name, args.machine), indent=2) + "\n")
    return 0


def robustness_summary(summary: dict, variant: str, machine: str | None) -> dict:
    """One variant's rebuilds as `lm-interp demo` reads them, through demo_robustness.py's writer."""
    from demo_robustness import summary as write_summary

    runs = [
        {
            "name": f"seed{seed}-threads1",
            "build": {"seed": int(seed), "threads": 1},
            "findings": row["findings"],
        }
        for seed, row in summary["variants"][variant]["seeds"].items()
        if row
    ]
    what = (
        "verdicts of `lm-interp demo --rebuild --seed S --threads 1` "
        f"(benchmarks/demo_recipe_sweep.py, recipe overrides {summary['variants'][variant]['overrides']})"
    )
    return write_summary(runs, None, what=what, machine=machine)


if __name__ == "__main__":
    raise SystemExit(main())
