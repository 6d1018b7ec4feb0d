"""The `lm-interp` console script (also `python -m lm_interp_plugin`).

`run`, `ls` and `validate` are lm-eval's own commands, argument for argument, with the plugin loaded (model
`interp-hf`) and its task folder on the include path next to any `--include_path` of yours. The other commands
are lm-interp's: `compare`, `explain-heads`, `explain-ffn`, `demo`, `parts`, `doctor`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .harness.preflight import PreflightError

logger = logging.getLogger("lm_interp_plugin")

LMEVAL_COMMANDS = ("run", "ls", "validate")
OWN_COMMANDS = ("compare", "explain-heads", "explain-ffn", "demo", "parts", "doctor")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm-interp",
        description="Explain lm-eval runs: attribution, instruction attention and FFN concepts per example, "
        "and base-vs-tuned comparison reports.",
        epilog="run / ls / validate take exactly lm-eval's arguments; `lm-interp run --help` ends with "
        "interp-hf's model arguments and defaults, `lm-interp ls tasks --plugin-only` lists the plugin's "
        "tasks in a second, `validate` also says where each interp_ variant's data comes from.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (
        ("run", "lm-eval run with interp-hf and the interp_* tasks (--help: interp-hf's arguments)"),
        ("ls", "the plugin's tasks, then lm-eval ls (tasks, groups, subtasks, tags); --plugin-only"),
        ("validate", "lm-eval validate, interp_* tasks included, plus where each variant's data comes from"),
    ):
        sub.add_parser(name, help=text, add_help=False)

    cmp = sub.add_parser("compare", help="base-vs-tuned report from two or more run folders")
    cmp.add_argument("runs", nargs="+", type=Path, help="lm-eval --output_path folders (or model subfolders)")
    cmp.add_argument(
        "--out", type=Path, required=True, help="folder for report.md, report.html, results.json"
    )
    cmp.add_argument("--labels", type=str, default=None, help="comma-separated names for the runs")
    cmp.add_argument("--baseline", type=str, default=None, help="label of the baseline run (default: first)")
    cmp.add_argument(
        "--pair",
        type=str,
        action="append",
        default=None,
        metavar="BASE:TUNED",
        help="declare that run TUNED is the instruction-tuned version of run BASE (labels); the paper's "
        "findings are checked only for declared pairs (repeat for several tuned runs of one base). Runs "
        "labelled base and tuned count as declared; any other runs get a neutral comparison",
    )
    cmp.add_argument(
        "--records",
        type=Path,
        nargs="+",
        default=None,
        metavar="DIR",
        help="each run's interpretation records folder (its records_dir), in run order, when they are "
        "not in the run folder and its results file does not name them",
    )
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
        p.add_argument("--gguf_file", default=None, help="a GGUF file in MODEL (needs the gguf package)")
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
                "--labeller",
                default="lexicon",
                help="who names each component's concept: lexicon (word lists in the model's embedding "
                "space), llm:PATH (a local instruction-tuned LM folder or hub id as the judge) or "
                "llm:FOLDER::FILE.gguf (a GGUF judge); labels are kept only when they beat a null (FDR 0.05)",
            )
            p.add_argument(
                "--validate",
                action="store_true",
                help="measure each concept's validity on the shipped interp_instruct items (AUC of its share "
                "on its own category's items, bootstrap interval) and print the table",
            )
            p.add_argument(
                "--cache_dir", type=Path, default=None, help="cache of components, labels and validity items"
            )
            p.add_argument(
                "--compare",
                type=Path,
                default=None,
                help="a base model's ffn.jsonl: print the "
                "rotation and concept proportions (Table 5 form), base = this file, tuned = --out",
            )

    demo = sub.add_parser(
        "demo",
        help="the whole story on the tiny base/tuned pair shipped with lm-interp (CPU: 30 to 45 s of CPU "
        "time; the wall time grows with the load)",
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

    parts = sub.add_parser(
        "parts", help="print a task's rendered prompts with their parts coloured (check before a run)"
    )
    parts.add_argument("task", help="an interp_ task, any stock lm-eval task, or a group")
    parts.add_argument("--num_fewshot", type=int, default=None, help="demonstrations (default: the task's)")
    parts.add_argument("--apply_chat_template", action="store_true", help="render with a chat template")
    parts.add_argument(
        "--tokenizer", default=None, help="tokenizer whose chat template to use (default: generic ChatML)"
    )
    parts.add_argument("--fewshot_as_multiturn", action="store_true", help="as lm-eval's flag")
    parts.add_argument("--system_instruction", default=None, help="as lm-eval's --system_instruction")
    parts.add_argument("--limit", type=int, default=3, help="documents per task (default: 3)")
    parts.add_argument("--include_path", action="append", default=None, help="extra task folder(s)")
    parts.add_argument("--json", action="store_true", help="one JSON object per prompt instead of colour")
    parts.add_argument("--plain", action="store_true", help="no ANSI colour: parts as [part|text]")

    doctor = sub.add_parser(
        "doctor", help="what lm-interp finds in a model, per layer, and which metrics it will get (no run)"
    )
    doctor.add_argument("model", help="hub id, local folder or .gguf file of a causal LM")
    doctor.add_argument("--gguf_file", default=None, help="a GGUF file in MODEL (needs the gguf package)")
    doctor.add_argument("--revision", default=None, help="model revision (branch, tag or commit)")
    doctor.add_argument("--json", action="store_true", help="the diagnosis as one JSON object")
    return parser


def _debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether ``--verbosity DEBUG`` (or ``-v DEBUG``) was given, and argv without it for lm-interp's own
    commands (lm-eval's commands take the flag themselves)."""
    debug, rest, i = False, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--verbosity", "-v") and i + 1 < len(argv):
            value, step = argv[i + 1], 2
        elif arg.startswith("--verbosity="):
            value, step = arg.split("=", 1)[1], 1
        else:
            rest.append(arg)
            i += 1
            continue
        debug = debug or value.upper() == "DEBUG"
        if argv[:1] and argv[0] in LMEVAL_COMMANDS:
            rest.extend(argv[i : i + step])
        i += step
    return debug, rest


#: What a user needs after Ctrl-C: nothing finished is lost (records are written line by line).
RESUME_HINT = (
    "Rerun the same command to resume: the interpretation records written so far are kept and reused "
    "(the traceback with --verbosity DEBUG)"
)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if not isinstance(err, (ValueError, RuntimeError, OSError, LookupError)) or isinstance(err, KeyError):
        text = f"{type(err).__name__}: {text}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A failure prints one ``lm-interp: error: ...`` line (exit status 1); the traceback
    only with ``--verbosity DEBUG`` (none for a `run` argument caught before lm-eval starts)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, argv = _debug_requested(argv)
    try:
        return _main(argv, debug)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"lm-interp: interrupted. {RESUME_HINT}", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except PreflightError as err:  # a wrong argument caught before lm-eval starts: the line says it all
        print(f"lm-interp: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        if debug:
            raise
        print(
            f"lm-interp: error: {_one_line(err)} (rerun with --verbosity DEBUG for the traceback)",
            file=sys.stderr,
        )
        return 1


def _main(argv: list[str], debug: bool) -> int:
    if argv and argv[0] in LMEVAL_COMMANDS:
        from .harness.preflight import check_run, format_plugin_tasks, include_paths, plugin_tasks

        tasks = plugin_tasks(include_paths(argv))  # one text read of the task YAMLs, for every check below
        if argv[0] == "run":  # seconds, before lm-eval's ~30 s start-up (see harness/preflight.py)
            check_run(argv[1:], tasks)
        if argv[0] == "ls" and "--plugin-only" in argv:  # a text read of the task folder: no task index
            print(format_plugin_tasks(tasks))
            return 0
        from .harness.launcher import run_lmeval

        run_lmeval(argv, tasks=tasks)
        return 0
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from . import commands

    handler = getattr(commands, args.command.replace("-", "_"))
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
