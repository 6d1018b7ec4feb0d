"""The `lm-interp` console script (also `python -m lm_interp_plugin`).

`run`, `ls` and `validate` are lm-eval's own commands, argument for argument, with the plugin loaded (model
`interp-hf`) and its task folder on the include path next to any `--include_path` of yours. The other commands
are lm-interp's: `compare`, `explain-heads`, `explain-ffn`, `demo`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("lm_interp_plugin")

LMEVAL_COMMANDS = ("run", "ls", "validate")
OWN_COMMANDS = ("compare", "explain-heads", "explain-ffn", "demo")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm-interp",
        description="Explain lm-eval runs: attribution, instruction attention and FFN concepts per example, "
        "and base-vs-tuned comparison reports.",
        epilog="run / ls / validate take exactly lm-eval's arguments (see `lm-interp run --help`).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (
        ("run", "lm-eval run with interp-hf and the interp_* tasks available"),
        ("ls", "lm-eval ls (tasks, groups, subtasks, tags), interp_* tasks included"),
        ("validate", "lm-eval validate, interp_* tasks included"),
    ):
        sub.add_parser(name, help=text, add_help=False)

    cmp = sub.add_parser("compare", help="base-vs-tuned report from two or more run folders")
    cmp.add_argument("runs", nargs="+", type=Path, help="lm-eval --output_path folders (or model subfolders)")
    cmp.add_argument(
        "--out", type=Path, required=True, help="folder for report.md, report.html, results.json"
    )
    cmp.add_argument("--labels", type=str, default=None, help="comma-separated names for the runs")
    cmp.add_argument("--baseline", type=str, default=None, help="label of the baseline run (default: first)")
    cmp.add_argument("--heads", type=Path, nargs="*", default=None, help="explain-heads outputs, one per run")
    cmp.add_argument("--ffn", type=Path, nargs="*", default=None, help="explain-ffn outputs, one per run")
    cmp.add_argument("--examples", type=int, default=3, help="token heatmaps of this many examples per task")

    for name, text in (
        ("explain-heads", "attention heads as word pairs (global, per model)"),
        ("explain-ffn", "FFN principal components as concepts (global, per model)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("model", help="hub id or local folder of a causal LM")
        p.add_argument("--out", type=Path, required=True, help="output JSONL file")
        p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
        p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto")
        p.add_argument("--revision", default=None, help="model revision (branch, tag or commit)")
        p.add_argument("--top_k", type=int, default=None, help="words per dimension / component")
        p.add_argument(
            "--layers", type=str, default=None, help="layers to explain, e.g. 0-3,7 (default: all)"
        )
        if name == "explain-heads":
            p.add_argument(
                "--vocab",
                type=Path,
                default=None,
                help="a word list (one per line) instead of the tokenizer's whole words",
            )
            p.add_argument(
                "--compare",
                type=Path,
                default=None,
                help="a base model's heads.jsonl: print the "
                "instruction-verb analysis (Table 3 form), base = this file, tuned = --out",
            )
        else:
            p.add_argument("--k", type=int, default=None, help="principal components per layer")
            p.add_argument(
                "--compare",
                type=Path,
                default=None,
                help="a base model's ffn.jsonl: print the "
                "rotation and concept proportions (Table 5 form), base = this file, tuned = --out",
            )

    demo = sub.add_parser(
        "demo",
        help="the whole story on the tiny base/tuned pair shipped with lm-interp (CPU, under a minute)",
    )
    demo.add_argument("--out", type=Path, default=Path("lm_interp_demo"), help="output folder")
    demo.add_argument("--limit", type=int, default=None, help="examples per task (default: all)")
    demo.add_argument(
        "--rebuild",
        action="store_true",
        help="train the pair again from its recipe (minutes) instead of using the shipped one; a finished "
        "build of the same recipe and seed in --cache_dir is reused",
    )
    demo.add_argument(
        "--force",
        action="store_true",
        help="train again even if a finished build is cached (implies --rebuild)",
    )
    demo.add_argument(
        "--cache_dir", type=Path, default=None, help="where rebuilt pairs are kept (default: OUT/models)"
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the build's seed (implies --rebuild; default: the shipped pair's)",
    )
    demo.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for training (implies --rebuild; default: $LM_INTERP_DEMO_THREADS, else the "
        "free cores, at most 4)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LMEVAL_COMMANDS:
        from .harness.launcher import run_lmeval

        run_lmeval(argv)
        return 0
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from . import commands

    handler = getattr(commands, args.command.replace("-", "_"))
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
