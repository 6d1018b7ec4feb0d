"""Benchmark: peak memory of one attribution, by chunk size and with/without activation checkpointing.

Each configuration runs in a fresh subprocess (peak RSS cannot be reset inside one process on a CPU; on CUDA
the peak allocated memory is read instead), on a random Llama built from a config. The figure reported is
the peak during the attribution minus the memory held before it (the model, the inputs), so it is what the
attribution itself needs.

Example::

    python benchmarks/memory.py --hidden 256 --layers 8 --prompt 2048 --targets 32 --chunks 1,8 --device cpu
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _child(args: argparse.Namespace) -> dict:
    """Runs in the subprocess: build, measure the baseline, attribute once, report the peak."""
    import time

    import torch

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from attribution import build_model

    from lm_interp_plugin.methods.attribution import gradient_x_input

    torch.set_num_threads(1)
    model = build_model(
        args.hidden,
        args.layers,
        args.vocab,
        args.prompt + args.targets + 8,
        args.device,
        torch.float32,
        "eager",
    )
    prompt = torch.randint(0, args.vocab, (args.prompt,))
    target = torch.randint(0, args.vocab, (args.targets,))
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    gradient_x_input(model, prompt, target, mode="reverse", chunk_size=args.chunk, checkpoint=args.checkpoint)
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "chunk": args.chunk,
        "checkpoint": args.checkpoint,
        "peak_extra_mib": (peak - before) / 2**20,
        "seconds": seconds,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--targets", type=int, default=32)
    parser.add_argument("--chunks", default="1,8", help="chunk sizes to measure")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return []
    rows = []
    common = [
        "--hidden",
        str(args.hidden),
        "--layers",
        str(args.layers),
        "--vocab",
        str(args.vocab),
        "--prompt",
        str(args.prompt),
        "--targets",
        str(args.targets),
        "--device",
        args.device,
    ]
    for chunk in (int(c) for c in args.chunks.split(",")):
        for checkpoint in (False, True):
            cmd = [sys.executable, __file__, "--child", "--chunk", str(chunk), *common]
            if checkpoint:
                cmd.append("--checkpoint")
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"hidden {args.hidden}, {args.layers} layers, P={args.prompt}, N={args.targets}, {args.device}")
    print("| chunk | checkpoint | peak extra MiB | seconds |\n|---:|---|---:|---:|")
    for row in rows:
        print(
            f"| {row['chunk']} | {row['checkpoint']} | {row['peak_extra_mib']:.0f} | {row['seconds']:.1f} |"
        )
    if args.json:
        config = {k: v for k, v in vars(args).items() if k not in ("json", "child", "chunk", "checkpoint")}
        args.json.write_text(json.dumps({"config": config, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
