"""Handlers of lm-interp's own subcommands (argparse namespaces in, exit codes out)."""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)


def _fail(message: str) -> int:
    print(f"lm-interp: error: {message}", file=sys.stderr)
    return 2


def compare(args: argparse.Namespace) -> int:
    """`lm-interp compare RUN ... --out DIR`: report.md, report.html, results.json."""
    from .report import compare as build_report
    from .report.errors import ReportInputError

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    try:
        result = build_report(list(args.runs), args.out, labels=labels, heads=args.heads or None,
                              ffn=args.ffn or None, examples=args.examples, baseline=args.baseline)
    except ReportInputError as err:
        return _fail(str(err))
    for path in ("report.md", "report.html", "results.json"):
        print(args.out / path)
    for note in getattr(result, "notes", [])[:20]:
        print(f"note: {note}")
    return 0


def explain_heads(args: argparse.Namespace) -> int:
    """`lm-interp explain-heads MODEL --out heads.jsonl [--compare base_heads.jsonl]`."""
    from .explain_heads import (
        compare_heads,
        explain_heads as run,
        format_table3,
        load_model_for_explain,
        read_heads_jsonl,
        write_heads_jsonl,
    )

    model, tokenizer = load_model_for_explain(args.model, args.dtype, args.device, args.revision)
    explanation = run(model, tokenizer, top_k=args.top_k, vocab=args.vocab, layers=args.layers)
    write_heads_jsonl(args.out, explanation)
    print(f"wrote {args.out} ({len(explanation.heads)} heads)")
    if args.compare:
        print(format_table3(compare_heads(read_heads_jsonl(args.compare), explanation)))
    return 0


def explain_ffn(args: argparse.Namespace) -> int:
    """`lm-interp explain-ffn MODEL --out ffn.jsonl [--compare base_ffn.jsonl]`."""
    from .explain_ffn import compare_ffn, explain_ffn as run, format_table5, read_ffn_jsonl, write_ffn_jsonl
    from .explain_heads import load_model_for_explain

    model, tokenizer = load_model_for_explain(args.model, args.dtype, args.device, args.revision)
    kwargs = {"layers": args.layers}
    if args.k:
        kwargs["k"] = args.k
    if args.top_k:
        kwargs["top_n"] = args.top_k
    explanation = run(model, tokenizer, **kwargs)
    write_ffn_jsonl(args.out, explanation)
    print(f"wrote {args.out}")
    if args.compare:
        comparison = compare_ffn(read_ffn_jsonl(args.compare), explanation)
        for layer, angles in zip(comparison.layers, comparison.mean_angles):
            print(f"layer {layer}: mean principal angle {angles:.1f} degrees")
        print(format_table5(comparison))
    return 0


def demo(args: argparse.Namespace) -> int:
    """`lm-interp demo`: build a tiny base/tuned pair, run the interp tasks on both, write the report."""
    from .demo.run import run_demo

    return run_demo(out=args.out, cache_dir=args.cache_dir, limit=args.limit, force=args.force)
