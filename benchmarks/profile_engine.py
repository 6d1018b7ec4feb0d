"""Where the engine's time goes: one `gradient_x_input` call under torch.profiler, and the ops whose batched
backward falls back to a per-sample loop.

`gradient_x_input` batches its VJPs with ``is_grads_batched`` (torch's legacy vmap): an op without a batching
rule runs once per derivative in the chunk. On the CPU that is the SDPA backward
(``_scaled_dot_product_flash_attention_for_cpu_backward``) and ``silu_backward``; on a GPU this script lists
which ones (flash / memory-efficient attention backward) and how much of the device time they take.

    python benchmarks/profile_engine.py --hidden 2048 --layers 16 --heads 32 --kv-heads 8 \\
        --intermediate 8192 --vocab 128256 --prompt 512 --targets 128 --device cuda --dtype bfloat16 \\
        --json profile.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attribution import DTYPES, build_model, resolve_device

from lm_interp_plugin.methods.attribution import gradient_x_input

FALLBACK = re.compile(r"batching rule for (\S+?)\.")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=0)
    parser.add_argument("--kv-heads", type=int, default=0)
    parser.add_argument("--intermediate", type=int, default=0)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--targets", type=int, default=32)
    parser.add_argument("--attn", choices=("eager", "sdpa"), default="sdpa")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--top", type=int, default=25, help="rows of the operator table")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device(args.device, args.dtype)
    model = build_model(
        args.hidden,
        args.layers,
        args.vocab,
        args.prompt + args.targets,
        device,
        dtype,
        args.attn,
        0,
        args.heads,
        args.kv_heads,
        args.intermediate,
    )
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, args.vocab, (args.prompt,), generator=gen).to(device)
    target = torch.randint(3, args.vocab, (args.targets,), generator=gen).to(device)
    gradient_x_input(model, prompt, target)  # warm: kernels, allocator
    torch._C._debug_only_display_vmap_fallback_warnings(True)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            torch.profiler.profile(activities=activities) as prof,
        ):
            warnings.simplefilter("always")
            out = gradient_x_input(model, prompt, target)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    finally:
        torch._C._debug_only_display_vmap_fallback_warnings(False)
    fallback = sorted({m.group(1) for w in caught for m in [FALLBACK.search(str(w.message))] if m})
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    averages = prof.key_averages()
    table = averages.table(sort_by=key, row_limit=args.top)
    total = sum(getattr(e, key.replace("cuda", "device"), getattr(e, key, 0)) for e in averages)

    def share(name: str) -> float:
        times = [
            getattr(e, key.replace("cuda", "device"), getattr(e, key, 0)) for e in averages if e.key == name
        ]
        return sum(times) / total if total else float("nan")

    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device_used": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "mode": out.mode,
        "passes": out.passes,
        "vmap_fallback_ops": fallback,
        "fallback_time_share": {name: share(name) for name in fallback},
        "table": table,
    }
    print(table)
    print(
        "ops whose batched backward loops per derivative (legacy vmap fallback):",
        ", ".join(fallback) or "none",
    )
    for name, value in result["fallback_time_share"].items():
        print(f"  {name}: {value:.1%} of the profiled self time")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
