"""The one summary text of a `benchmarks/gpu.sh` run, from its stage table and every stage's JSON.

    python benchmarks/gpu_summary.py WORK_DIR [--command "bash benchmarks/gpu.sh ..."] [--dry-run 0|1]

Prints, with the date, the card and the command: each stage's status and seconds; per attribution cell the
engine's ratios to the paper's loop and the frozen loop (same process), the whole pass over the engine, the
engine without the LM-head shortcut, achieved TFLOP/s and peak GiB; the precision table and the chosen
default; the lm-eval overhead; explain timings; the pytest line. Missing or failed stages say so.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
from pathlib import Path

BF16_PEAK_TFLOPS = {"H100": 790.0, "H200": 790.0}  # dense bf16, as in issue 16 (the chip's ~50% target)


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(value, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _peak(gpu: str | None) -> float | None:
    for name, tflops in BF16_PEAK_TFLOPS.items():
        if gpu and name in gpu:
            return tflops
    return None


def attribution_lines(name: str, data: dict) -> list[str]:
    config = data["config"]
    model = config.get("model", {})
    gpu = config.get("gpu")
    peak = _peak(gpu)
    lines = [
        f"[{name}] {config.get('device_used')} {config.get('dtype_used')} attn={config.get('attn')} "
        f"hidden={model.get('hidden_size')} layers={model.get('num_hidden_layers')} "
        f"kv_heads={model.get('num_key_value_heads')} vocab={model.get('vocab_size')} gpu={gpu}",
        f"  {'P':>5} {'N':>4} {'paper s':>8} {'frozen s':>8} {'engine s':>8} {'fullhd s':>8} {'pass s':>8} "
        f"{'eng/paper':>9} {'eng/froz':>8} {'pass/eng':>8} {'eng/fullhd':>10} {'TFLOP/s':>8} {'%peak':>6} "
        f"{'eng GiB':>7} {'pass GiB':>8} {'rel diff':>9}",
    ]
    for s in data.get("settings", []):
        times, ratios, peaks = s.get("times", {}), s.get("ratios", {}), s.get("peak_bytes", {})
        tflops = s.get("engine_gflops", float("nan")) / 1e3 if "engine" in times else None
        diffs = [d for d in s.get("rel_diff", {}).values() if not math.isnan(d)]
        cells = [
            f"{s['prompt']:>5}",
            f"{s['targets']:>4}",
            *(f"{_fmt(times.get(k)):>8}" for k in ("paper", "frozen", "engine", "engine-fullhead", "pass")),
            f"{_fmt(ratios.get('engine/paper'), '.2f'):>9}",
            f"{_fmt(ratios.get('engine/frozen'), '.2f'):>8}",
            f"{_fmt(ratios.get('pass/engine'), '.2f'):>8}",
            f"{_fmt(ratios.get('engine/fullhead'), '.2f'):>10}",
            f"{_fmt(tflops, '.1f'):>8}",
            f"{_fmt(100 * tflops / peak if peak and tflops else None, '.0f'):>6}",
            *(
                f"{_fmt(peaks[k] / 2**30 if k in peaks else None, '.1f'):>{w}}"
                for k, w in (("engine", 7), ("pass", 8))
            ),
            f"{_fmt(max(diffs) if diffs else None, '.1e'):>9}",
        ]
        lines.append("  " + " ".join(cells))
        if s.get("failed"):
            lines.append(f"    failed: {s['failed']}")
    return lines


def shift_lines(name: str, data: dict) -> list[str]:
    """shift_signals.py: per (prompt, target length), the pass's seconds and each signal's added cost as a
    ratio of it (issue 23's targets: reference <= 0.5x, lens and contrastive <= 0.2x)."""
    lines = [f"[{name}] base-vs-tuned signals, ratio of the pass (targets: reference 0.5x, lens/foil 0.2x)"]
    for row in data["rows"]:
        ratio = row["ratio_to_pass"]
        lines.append(
            f"  P={row['prompt']} N={row['targets']}: pass {row['seconds']['pass'] * 1000:.1f} ms; reference "
            f"{ratio['reference']:.2f}x, lens {ratio['lens']:.2f}x, foil added {row['foil_added']:.2f}x"
        )
    return lines


def summary(work: Path, command: str, dry_run: bool) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    env_log = (work / "env.log").read_text() if (work / "env.log").exists() else ""
    card = next(
        (
            line.split("gpu", 1)[1].strip()
            for line in env_log.splitlines()
            if "torch" in line and " gpu " in line
        ),
        "?",
    )
    lines = [
        f"lm-interp GPU run: {now}; card: {card}; command: {command}"
        + ("  [DRY RUN: toy sizes on CPU]" if dry_run else ""),
        next((line for line in env_log.splitlines() if line.startswith("python ")), ""),
        "",
        "stages:",
    ]
    with (work / "stages.tsv").open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            lines.append(
                f"  {row['stage']:<20} {row['status']:<28} {row['seconds']:>4} s (limit {row['timeout']} s)"
            )
    for path in sorted(work.glob("*.json")):
        data = _load(path)
        name = path.stem
        lines.append("")
        if data is None:
            lines.append(f"[{name}] unreadable JSON")
        elif "settings" in data:
            lines += attribution_lines(name, data)
        elif "candidates" in data:
            lines += [f"[{name}]", *("  " + line for line in data["table"].splitlines())]
        elif "ratios" in data and "accuracy" in data:
            lines += [f"[{name}] lm-eval {data['config'].get('task')} limit {data['config'].get('limit')}",
                      *("  " + line for line in data["table"].splitlines())]  # fmt: skip
        elif "vmap_fallback_ops" in data:
            shares = ", ".join(f"{k} {v:.1%}" for k, v in data["fallback_time_share"].items()) or "none"
            lines.append(
                f"[{name}] {data['mode']} mode, {data['passes']} passes; per-derivative loops: {shares}"
            )
            lines += ["  " + line for line in data["table"].splitlines()[:16]]
        elif "rows" in data and all("foil_added" in row for row in data["rows"]):
            lines += shift_lines(name, data)
        elif "explain_heads_s" in data:
            heads, ffn = data["explain_heads_s"], data["explain_ffn_s"]
            peak_gib = _fmt(data.get("max_memory_allocated_gib"), ".1f")
            lines.append(
                f"[{name}] explain-heads {heads:.1f} s, explain-ffn {ffn:.1f} s, peak {peak_gib} GiB"
            )
    pytest_log = work / "pytest_gpu.log"
    if pytest_log.exists():
        tail = [line for line in pytest_log.read_text().splitlines() if line.strip()]
        lines += ["", f"[pytest_gpu] {tail[-1] if tail else '(no output)'}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--command", default="bash benchmarks/gpu.sh")
    parser.add_argument("--dry-run", default="0")
    args = parser.parse_args()
    print(summary(args.work, args.command, args.dry_run == "1"), end="")


if __name__ == "__main__":
    main()
