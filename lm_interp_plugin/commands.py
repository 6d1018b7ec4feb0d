"""Handlers of lm-interp's own subcommands (argparse namespaces in, exit codes out).

Each handler turns its arguments into one library call and prints what the user needs; the work itself lives
in `report`, `explain` and `demo`, which never import this module.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter

logger = logging.getLogger(__name__)


def _fail(message: str) -> int:
    print(f"lm-interp: error: {message}", file=sys.stderr)
    return 2


def compare(args: argparse.Namespace) -> int:
    """`lm-interp compare RUN ... --out DIR`: report.md, report.html, results.json."""
    from .report import compare as build_report
    from .report.errors import ReportInputError
    from .report.notes import is_warning

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    pairs = []
    for text in args.pair or []:
        base, sep, tuned = text.partition(":")
        if not sep or not base.strip() or not tuned.strip():
            return _fail(f"--pair {text!r} is not BASE:TUNED (two run labels joined by a colon)")
        pairs.append((base.strip(), tuned.strip()))
    try:
        result = build_report(
            list(args.runs),
            args.out,
            labels=labels,
            heads=args.heads or None,
            ffn=args.ffn or None,
            examples=args.examples,
            baseline=args.baseline,
            pairs=pairs or None,
            records=args.records,
        )
    except ReportInputError as err:
        return _fail(str(err))
    for path in ("report.md", "report.html", "results.json"):
        print(args.out / path)
    if result.pair:
        tuned = ", ".join(result.pair["tuned"])
        print(f"paper findings checked for {result.pair['base']} -> {tuned} ({result.pair['how']})")
    else:
        print("no base/tuned pair declared (--pair BASE:TUNED): a neutral comparison, no paper findings")
    for note in result.notes[:20]:
        print(f"note: {note}")
    for task in result.tasks:  # what makes a comparison suspect (the same evaluation twice, other prompts)
        for note in task.notes:
            if is_warning(note):
                print(f"warning: {note.message}")
    return 0


def _model_path(args: argparse.Namespace) -> str:
    """MODEL, or the GGUF file MODEL/--gguf_file (the explain loaders split it again)."""
    from pathlib import Path

    return str(Path(args.model) / args.gguf_file) if getattr(args, "gguf_file", None) else args.model


def explain_heads(args: argparse.Namespace) -> int:
    """`lm-interp explain-heads MODEL --out heads.jsonl [--compare base_heads.jsonl]`."""
    from .explain.heads import compare_heads, explain_heads_to_file, read_heads_jsonl
    from .report.render import table_markdown
    from .report.sections.heads import table3

    explanation = explain_heads_to_file(
        _model_path(args),
        args.out,
        dtype=args.dtype,
        device=args.device,
        revision=args.revision,
        top_k=args.top_k,
        vocab=args.vocab,
        layers=args.layers,
    )
    print(f"wrote {args.out} ({len(explanation.heads)} heads)")
    if args.compare:
        print(table_markdown(table3(compare_heads(read_heads_jsonl(args.compare), explanation))))
    return 0


def explain_ffn(args: argparse.Namespace) -> int:
    """`lm-interp explain-ffn MODEL --out ffn.jsonl [--compare base_ffn.jsonl]`."""
    from .explain.ffn import explain_ffn_to_file, read_ffn_jsonl
    from .explain.ffn_compare import compare_ffn
    from .report.render import table_markdown
    from .report.sections.ffn_global import table5

    explanation = explain_ffn_to_file(
        _model_path(args),
        args.out,
        dtype=args.dtype,
        device=args.device,
        revision=args.revision,
        k=args.k,
        top_n=args.top_k,
        layers=args.layers,
        labeller=args.labeller,
        validate=args.validate or None,
        cache_dir=args.cache_dir,
    )
    print(f"wrote {args.out}")
    counts = Counter(label.concept for layer in explanation.layers for label in layer.labels)
    total = sum(counts.values())
    config = explanation.params["labeller"]
    print(
        f"labels ({config['name']}, FDR {config.get('alpha')}): "
        + ", ".join(f"{name} {counts.get(name, 0)}/{total}" for name in explanation.categories("concept"))
    )
    if explanation.validity is not None:
        print(explanation.validity.table())
    if args.compare:
        comparison = compare_ffn(read_ffn_jsonl(args.compare), explanation)
        for layer, angles in zip(comparison.layers, comparison.mean_angles):
            print(f"layer {layer}: mean principal angle {angles:.1f} degrees")
        table = table5(comparison)
        print(table_markdown(table) if table is not None else "(no concept proportions: no layers compared)")
    return 0


def demo(args: argparse.Namespace) -> int:
    """`lm-interp demo`: run the interp tasks on the shipped (or a rebuilt) tiny base/tuned pair, write the
    report."""
    from .demo.run import run_demo

    return run_demo(
        out=args.out,
        cache_dir=args.cache_dir,
        limit=args.limit,
        rebuild=args.rebuild,
        force=args.force,
        seed=args.seed,
        threads=args.threads,
    )


def parts(args: argparse.Namespace) -> int:
    """`lm-interp parts TASK`: the rendered prompts with their parts (ANSI colour, plain or JSON)."""
    import json

    from .harness.parts import format_ansi, render_parts

    try:
        prompts = render_parts(
            args.task,
            num_fewshot=args.num_fewshot,
            apply_chat_template=args.apply_chat_template,
            system_instruction=args.system_instruction,
            limit=args.limit,
            include_path=args.include_path,
            tokenizer=args.tokenizer,
            fewshot_as_multiturn=args.fewshot_as_multiturn,
        )
    except (KeyError, ValueError) as err:
        return _fail(f"cannot build the prompts of {args.task!r}: {err}")
    if args.json:
        for prompt in prompts:
            print(json.dumps(prompt.to_dict(), ensure_ascii=False))
    else:
        print(format_ansi(prompts, color=not args.plain))
    return 0


def doctor(args: argparse.Namespace) -> int:
    """`lm-interp doctor MODEL`: what arch.py finds per layer and which metrics the model gets (no run)."""
    import json

    from .explain.doctor import diagnose, format_diagnosis

    diagnosis = diagnose(args.model, gguf_file=args.gguf_file, revision=args.revision)
    print(json.dumps(diagnosis.to_dict()) if args.json else format_diagnosis(diagnosis))
    return 0
