"""Benchmark: the global explanations (explain-heads, explain-ffn) at a realistic model size.

A random Llama is built from a config (no download) at the widths of a real model; its depth can be cut to
fit a CPU's memory, and the per-layer time is then extrapolated to the full depth (both layers and heads are
explained independently per layer, so the cost is linear in depth). The vocabulary the words come from is a
synthetic `WordVocab` of ``--words`` single-token "words" spread over the embedding matrix, so the projection
sizes are those of a real whole-word vocabulary.

Examples::

    # CPU: 7B-class widths, 2 layers, extrapolated to 32
    python benchmarks/explain.py --hidden 4096 --intermediate 11008 --heads 32 --kv-heads 32 --vocab 32000 \\
        --layers 2 --full-layers 32 --device cpu --dtype float32
    # GPU: the whole 7B-class model in bf16
    python benchmarks/explain.py --hidden 4096 --intermediate 11008 --heads 32 --kv-heads 32 --vocab 32000 \\
        --layers 32 --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attribution import build_model as build_llama  # the benchmarks' one random-Llama builder

from lm_interp_plugin.explain.ffn import explain_ffn
from lm_interp_plugin.explain.heads import explain_heads
from lm_interp_plugin.methods.vocab import WordVocab
from lm_interp_plugin.testing.tiny import train_tokenizer

logger = logging.getLogger("benchmarks.explain")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """A random Llama of the requested widths and depth, on the device, in the dtype."""
    return build_llama(
        args.hidden,
        args.layers,
        args.vocab,
        4096,
        args.device,
        DTYPES[args.dtype],
        "eager",
        seed=args.seed,
        heads=args.heads,
        kv_heads=args.kv_heads,
        intermediate=args.intermediate,
    )


def synthetic_vocab(vocab_size: int, words: int) -> WordVocab:
    """`words` distinct token ids spread evenly over the vocabulary, each named like a word."""
    words = min(words, vocab_size)
    step = vocab_size / words
    ids = sorted({int(i * step) for i in range(words)})
    return WordVocab(token_ids=ids, words=[f"w{i}" for i in ids])


def _timed(device: str, fn, *args, **kwargs) -> tuple[float, object]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--words", type=int, default=20000, help="whole words the explanations draw from")
    parser.add_argument("--layers", type=int, default=2, help="layers built and explained")
    parser.add_argument("--full-layers", type=int, default=None, help="extrapolate the time to this depth")
    parser.add_argument("--k", type=int, default=10, help="FFN principal components per layer")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    build_s, model = _timed(args.device, build_model, args)
    tokenizer = train_tokenizer(["a tokenizer only for the fingerprint"], vocab_size=300)
    vocab = synthetic_vocab(args.vocab, args.words)
    heads_s, heads = _timed(args.device, explain_heads, model, tokenizer, vocab=vocab, progress=False)
    ffn_s, ffn = _timed(args.device, explain_ffn, model, tokenizer, k=args.k, vocab=vocab, progress=False)
    full = args.full_layers or args.layers
    result = {
        "config": {
            k: getattr(args, k)
            for k in (
                "hidden",
                "intermediate",
                "heads",
                "kv_heads",
                "vocab",
                "words",
                "layers",
                "k",
                "device",
                "dtype",
                "threads",
            )
        },
        "build_s": build_s,
        "explain_heads_s": heads_s,
        "explain_ffn_s": ffn_s,
        "per_layer_s": {"heads": heads_s / args.layers, "ffn": ffn_s / args.layers},
        "full_layers": full,
        "extrapolated_full_s": {
            "heads": heads_s / args.layers * full,
            "ffn": ffn_s / args.layers * full,
            "total": (heads_s + ffn_s) / args.layers * full,
        },
        "explained": {"heads": len(heads.heads), "ffn_layers": len(ffn.layers)},
    }
    if args.device.startswith("cuda"):
        result["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"model built in {build_s:.1f} s ({args.layers} layers, hidden {args.hidden}, {args.dtype}, "
        f"{args.device})"
    )
    print(f"explain-heads: {heads_s:.1f} s ({heads_s / args.layers:.2f} s/layer)")
    print(f"explain-ffn:   {ffn_s:.1f} s ({ffn_s / args.layers:.2f} s/layer)")
    if full != args.layers:
        print(
            f"extrapolated to {full} layers: heads {result['extrapolated_full_s']['heads']:.0f} s, "
            f"ffn {result['extrapolated_full_s']['ffn']:.0f} s, total "
            f"{result['extrapolated_full_s']['total']:.0f} s"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
