"""Do the demo's verdicts survive a rebuild? Seeds and thread counts against the shipped pair.

    python benchmarks/demo_robustness.py --out /tmp/robust [--seeds 0 1 2] [--threads 1 2] [--limit N]

Runs `lm-interp demo` on the shipped pair, then `lm-interp demo --rebuild --seed S --threads T` for every seed
with the first thread count and seed 0 with every other thread count (the default grid: seeds 0, 1, 2 on one
thread, seed 0 on two threads: 4 builds of 2 to 10 minutes each on 2 CPU cores, plus one demo run of about a
minute each). Each run goes in its own subprocess and folder (`OUT/<name>/`, its models in
`OUT/<name>/models`), so a crash or a kill loses one configuration only; a finished configuration is reused
on a second call.

Prints, and writes to OUT/robustness.json, per configuration: the build's held-out accuracies and time, and
the six verdicts (3 findings x 2 tasks) with their p-values, and whether they equal the shipped pair's. Also
says whether the weights of the seed-0 builds with different thread counts are bit-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run_config(out: Path, name: str, extra: list[str], limit: int | None) -> dict:
    """One `lm-interp demo` in a subprocess; its findings, build stats and wall time."""
    folder = out / name
    results_path = folder / "report" / "results.json"
    meta_path = folder / "robustness_run.json"
    if meta_path.is_file() and results_path.is_file():
        return json.loads(meta_path.read_text())
    cmd = [sys.executable, "-m", "lm_interp_plugin", "demo", "--out", str(folder), *extra]
    if limit:
        cmd += ["--limit", str(limit)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    (folder / "demo_stdout.txt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "demo_stdout.txt").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr[-20000:])
    if proc.returncode != 0:
        raise RuntimeError(
            f"{name}: `{' '.join(cmd)}` failed ({proc.returncode}); see {folder}/demo_stdout.txt"
        )
    results = json.loads(results_path.read_text())
    manifests = sorted((folder / "models").glob("demo-*/demo_manifest.json"))
    manifest = json.loads(manifests[0].read_text()) if manifests else {}
    meta = {
        "name": name,
        "args": extra,
        "seconds": round(seconds, 1),
        "build": {k: manifest.get(k) for k in ("key", "seed", "threads", "evaluation", "seconds")},
        "findings": [
            {
                k: f[k]
                for k in ("finding", "task", "metric", "mean_baseline", "mean_other", "p_value", "verdict")
            }
            for f in results["findings"]
        ],
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def same_weights(a: Path, b: Path) -> bool | None:
    """Whether two builds' base and tuned weights are bit-identical (None if one is missing)."""
    files = []
    for folder in (a, b):
        found = sorted((folder / "models").glob("demo-*"))
        if not found:
            return None
        files.append(found[0])
    return all(
        (files[0] / part / "model.safetensors").read_bytes()
        == (files[1] / part / "model.safetensors").read_bytes()
        for part in ("base", "tuned")
    )


def summary(runs: list[dict], limit: int | None, what: str | None = None, machine: str | None = None) -> dict:
    """Per rebuild, its verdict of each (task, finding): what `lm-interp demo` reads to say which of the
    shipped pair's verdicts a rebuild from the recipe keeps (`demo.run.rebuild_agreement`). Also written by
    benchmarks/demo_recipe_sweep.py, with its own `what` and the `machine` the builds ran on."""
    from lm_interp_plugin.demo.run import VERDICT_P  # the p the demo's verdicts read, which it checks

    return {
        "what": what
        or "verdicts of `lm-interp demo --rebuild --seed S --threads T` (benchmarks/demo_robustness.py)",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "limit": limit,
        "verdict_p": VERDICT_P,
        "rebuilds": [
            {
                "name": run["name"],
                "seed": run["build"].get("seed"),
                "threads": run["build"].get("threads"),
                "verdicts": {f"{f['task']}/{f['finding']}": f["verdict"] for f in run["findings"]},
            }
            for run in runs
            if run["name"] != "shipped"
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--limit", type=int, default=None, help="examples per task (default: all)")
    parser.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="also write the compact verdict table that `lm-interp demo` prints from "
        "(lm_interp_plugin/data/demo_pair/robustness.json)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    configs = [("shipped", [])]
    configs += [
        (
            f"seed{s}-threads{args.threads[0]}",
            ["--rebuild", "--seed", str(s), "--threads", str(args.threads[0])],
        )
        for s in args.seeds
    ]
    configs += [
        (f"seed{args.seeds[0]}-threads{t}", ["--rebuild", "--seed", str(args.seeds[0]), "--threads", str(t)])
        for t in args.threads[1:]
    ]
    runs = []
    for name, extra in configs:
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        try:
            runs.append(run_config(args.out, name, extra, args.limit))
        except RuntimeError as err:
            print(f"  {err}", flush=True)
    shipped = next((r for r in runs if r["name"] == "shipped"), None)
    reference = [(f["task"], f["finding"], f["verdict"]) for f in shipped["findings"]] if shipped else None

    print("\n| run | build s | tuned EM / MC | verdicts (instruct 1 2 3 / mc 1 2 3) | same as shipped |")
    print("|---|---|---|---|---|")
    for run in runs:
        verdicts = [(f["task"], f["finding"], f["verdict"]) for f in run["findings"]]
        run["agrees_with_shipped"] = verdicts == reference if reference else None
        ev = (run["build"].get("evaluation") or {}).get("tuned")
        acc = f"{ev['exact_match']['overall']:.1%} / {ev['mc']['overall']:.1%}" if ev else "shipped"
        build_s = (run["build"].get("seconds") or {}).get("total", "-")
        short = " ".join(
            {"shows up": "+", "opposite": "-", "not significant": "0", "untested": "?"}[v]
            for _, _, v in verdicts
        )
        print(f"| {run['name']} | {build_s} | {acc} | {short} | {run['agrees_with_shipped']} |")
    identical = {
        f"seed{args.seeds[0]}-threads{args.threads[0]} vs threads{t}": same_weights(
            args.out / f"seed{args.seeds[0]}-threads{args.threads[0]}",
            args.out / f"seed{args.seeds[0]}-threads{t}",
        )
        for t in args.threads[1:]
    }
    print("bit-identical weights:", identical)
    (args.out / "robustness.json").write_text(
        json.dumps({"runs": runs, "identical_weights": identical}, indent=2)
    )
    if args.summary:
        args.summary.write_text(json.dumps(summary(runs, args.limit), indent=2) + "\n")
    print("(+ shows up, - opposite, 0 not significant, ? untested)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
