"""Benchmark: the interpretation overhead of a whole lm-eval run, `--model interp-hf` vs `--model hf`.

A tiny-but-not-trivial random Llama (with a tokenizer trained locally on the task text) is saved to a
temporary folder; then `lm_eval.simple_evaluate` runs the same task with ``limit`` documents as

* ``hf``                  - stock lm-eval;
* ``interp-hf``           - answers as ``hf`` plus one interpretation pass per gold request;
* ``interp-hf-noattn``    - the same with ``interp_attention=false`` (no attention probabilities).

Each interp run gets a fresh records folder (a reused one would resume instead of recomputing). The runs are
interleaved within each repetition; we report median wall seconds of the whole `simple_evaluate` call (model
loading included) and the ratio to ``hf``.

Example::

    python benchmarks/overhead.py --task interp_instruct_mc --limit 20 --hidden 256 --layers 4 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks.overhead")


def save_model(
    folder: Path,
    hidden: int,
    layers: int,
    vocab: int,
    heads: int = 0,
    kv_heads: int = 0,
    intermediate: int = 0,
    dtype: str = "float32",
) -> Path:
    """Train a tokenizer, build a random Llama of the given size and save both as an HF folder (weights in
    `dtype`, so a 1B-class model is saved and loaded at its half-precision size)."""
    import torch

    from lm_interp_plugin.testing.tiny import build_tiny_model, save_tiny, task_corpus, train_tokenizer

    tokenizer = train_tokenizer(task_corpus(), vocab_size=vocab)
    heads = heads or max(2, hidden // 64)
    model = build_tiny_model(
        "llama",
        tokenizer,
        seed=0,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads or heads,
        intermediate=intermediate or None,
        max_positions=2048,
    )
    return save_tiny(model.to(getattr(torch, dtype)), tokenizer, folder / "llama")


def evaluate(model: str, model_args: str, task: str, limit: int, device: str = "cpu") -> tuple[float, dict]:
    """Wall seconds of one in-process `simple_evaluate` on the plugin's task folder, and its result."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import lm_interp_plugin.harness.model  # noqa: F401  (registers interp-hf)
    from lm_interp_plugin.harness.tasks import tasks_dir

    manager = TaskManager(include_path=[tasks_dir()])
    start = time.perf_counter()
    result = lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=[task],
        limit=limit,
        task_manager=manager,
        bootstrap_iters=0,
        device=device,
        log_samples=False,
    )
    return time.perf_counter() - start, result


def _accuracy(result: dict, task: str) -> float | None:
    table = result["results"][task]
    for key in ("acc,none", "exact_match,none"):
        if key in table:
            return float(table[key])
    return None


def format_table(times: dict[str, float], accuracy: dict[str, float | None]) -> str:
    header = f"{'run':<18} {'median s':>9} {'x hf':>6} {'accuracy':>9}"
    lines = [header, "-" * len(header)]
    for name, seconds in times.items():
        acc = accuracy.get(name)
        lines.append(
            f"{name:<18} {seconds:9.2f} {seconds / times['hf']:6.2f} "
            f"{'-' if acc is None else f'{acc:.3f}':>9}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="interp_instruct_mc")
    parser.add_argument("--limit", type=int, default=20, help="documents per run")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=800, help="tokenizer vocabulary size")
    parser.add_argument("--heads", type=int, default=0, help="attention heads (0: hidden / 64)")
    parser.add_argument("--kv-heads", type=int, default=0, help="key/value heads (0: as many as --heads)")
    parser.add_argument("--intermediate", type=int, default=0, help="MLP width (0: 2 x hidden)")
    parser.add_argument("--device", default="cpu", help="lm-eval's device (cuda on a GPU machine)")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="weights' dtype"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (imports, caches)")
    parser.add_argument(
        "--no-noattn", dest="noattn", action="store_false", help="skip the interp_attention=false run"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch.set_num_threads (0: leave torch's default; 1 on a CPU shared with other jobs)",
    )
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print the table, write JSON if asked; returns the JSON-able result."""
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="lm_interp_overhead_") as tmp:
        tmp_path = Path(tmp)
        folder = save_model(
            tmp_path,
            args.hidden,
            args.layers,
            args.vocab,
            args.heads,
            args.kv_heads,
            args.intermediate,
            args.dtype,
        )
        base = f"pretrained={folder},dtype={args.dtype}"
        runs = {"hf": ("hf", base), "interp-hf": ("interp-hf", base)}
        if args.noattn:
            runs["interp-hf-noattn"] = ("interp-hf", f"{base},interp_attention=false")
        samples: dict[str, list[float]] = {name: [] for name in runs}
        accuracy: dict[str, float | None] = {}
        for rep in range(args.warmup + args.repeats):  # the first `warmup` repetitions are not timed
            for name, (model, model_args) in runs.items():
                if model == "interp-hf":
                    model_args += f",records_dir={tmp_path / f'records-{name}-{rep}'}"
                seconds, result = evaluate(model, model_args, args.task, args.limit, args.device)
                accuracy[name] = _accuracy(result, args.task)
                if rep >= args.warmup:
                    samples[name].append(seconds)
    times = {name: statistics.median(values) for name, values in samples.items()}
    table = format_table(times, accuracy)
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "times": times,
        "samples": samples,
        "ratios": {name: seconds / times["hf"] for name, seconds in times.items()},
        "accuracy": accuracy,
        "table": table,
    }
    print(
        f"task={args.task} limit={args.limit} hidden={args.hidden} layers={args.layers} device={args.device} "
        f"dtype={args.dtype} "
        f"repeats={args.repeats} "
        f"threads={args.threads or 'default'}"
    )
    print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
