"""What fsync costs when records are written: never (flush only), every record, or the default cadence.

A record of a realistic size (a prompt of `--prompt` tokens, `--targets` target tokens, raw and quantised
matrices, 32 layers x 32 heads of attention) is written `--n` times by `RecordWriter` under each policy, into
a folder on the disk being measured (`--dir`, default a temporary folder). Prints the time per record of each
policy and the ratio to flush-only; compare with the seconds one interpretation pass takes per request.

    python benchmarks/records_fsync.py --n 200 --prompt 256 --targets 16 [--dir /path/on/that/disk]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lm_interp_plugin.records import FSYNC_INTERVAL_S, InterpRecord, RecordWriter


def make_record(i: int, prompt: int, targets: int, rng: np.random.Generator) -> InterpRecord:
    raw = rng.normal(size=(prompt, targets))
    return InterpRecord(
        task="bench",
        doc_id=i,
        doc_hash=f"{i:064x}",
        request_index=0,
        request_type="loglikelihood",
        role="gold",
        prompt_tokens=[f"tok{j}" for j in range(prompt)],
        target_tokens=[f"t{j}" for j in range(targets)],
        token_parts=["instruction"] * prompt,
        raw=raw.tolist(),
        quantised=np.clip(np.ceil(raw * 3), 0, 10).astype(int).tolist(),
        params={"L": 10, "b": 7, "p": 4.0},
        metrics={"instruction_importance": 0.5},
        attention={"instruction_attention": rng.random((32, 32)).tolist()},
    )


def time_policy(folder: Path, records: list[InterpRecord], interval: float | None) -> tuple[float, int]:
    """Seconds per record written under one fsync policy (close included), and the number of fsyncs."""
    folder.mkdir(parents=True)
    start = time.perf_counter()
    writer = RecordWriter(folder, fsync_interval=interval)
    for record in records:
        writer.write(record)
    writer.close()
    return (time.perf_counter() - start) / len(records), writer.n_fsync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--targets", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    records = [make_record(i, args.prompt, args.targets, rng) for i in range(args.n)]
    line_bytes = len(json.dumps(records[0].to_dict()))
    policies = {
        "flush only": None,
        "every record": 0.0,
        f"every {FSYNC_INTERVAL_S:g} s (default)": FSYNC_INTERVAL_S,
    }
    best: dict[str, float] = {}
    syncs: dict[str, int] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for repeat in range(args.repeats):  # interleaved, best of
            for name, interval in policies.items():
                folder = Path(tmp) / f"{repeat}_{list(policies).index(name)}"
                seconds, n_sync = time_policy(folder, records, interval)
                best[name] = min(best.get(name, seconds), seconds)
                syncs[name] = n_sync
    base = best["flush only"]
    print(
        f"{args.n} records of {line_bytes / 1e3:.0f} kB ({args.prompt} x {args.targets} matrices), best of "
        f"{args.repeats}"
    )
    print(f"{'policy':<28}{'ms / record':>12}{'x flush only':>14}{'fsyncs':>8}")
    for name in policies:
        print(f"{name:<28}{best[name] * 1e3:>12.2f}{best[name] / base:>14.2f}{syncs[name]:>8}")
    if args.json:
        args.json.write_text(
            json.dumps({"line_bytes": line_bytes, "seconds_per_record": best, "fsyncs": syncs})
        )


if __name__ == "__main__":
    main()
