"""The `lm-interp` console script (also `python -m lm_interp_plugin`).

`run`, `ls` and `validate` are lm-eval's own commands, argument for argument, with the plugin loaded (model
`interp-hf`) and its task folder on the include path next to any `--include_path` of yours. The other commands
are lm-interp's: `compare`, `explain-heads`, `explain-ffn`, `demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

logger = logging.getLogger("lm_interp_plugin")

LMEVAL_COMMANDS = ("run", "ls", "validate")
OWN_COMMANDS = ("compare", "explain-heads", "explain-ffn", "demo")


@contextlib.contextmanager
def plugin_tasks_visible() -> Iterator[Path]:
    """Make every TaskManager built inside see the plugin's task folder (besides the user's include paths)."""
    from lm_eval.tasks import TaskManager

    from .harness.tasks import tasks_dir

    ours = tasks_dir()
    original = TaskManager.__init__

    def patched(self, *args, include_path=None, **kwargs):
        paths = [] if include_path is None else (
            list(include_path) if isinstance(include_path, (list, tuple)) else [include_path])
        if not any(Path(p).resolve() == ours.resolve() for p in paths):
            paths.insert(0, ours)  # later paths override earlier ones: the user's win
        original(self, *args, include_path=paths, **kwargs)

    TaskManager.__init__ = patched
    try:
        yield ours
    finally:
        TaskManager.__init__ = original


def _option(argv: Sequence[str], *flags: str) -> str | None:
    for i, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def with_records_dir(argv: list[str]) -> list[str]:
    """For `run --model interp-hf --output_path P`, put the records beside lm-eval's samples:
    ``records_dir=P/<sanitized model name>`` (unless the user gave records_dir)."""
    from lm_eval.utils import sanitize_model_name

    if _option(argv, "--model") != "interp-hf":
        return argv
    output = _option(argv, "--output_path", "-o")
    model_args = _option(argv, "--model_args", "-a") or ""
    if not output or "records_dir" in model_args:
        return argv
    if model_args.strip().startswith("{"):
        parsed = json.loads(model_args)
        pretrained = str(parsed.get("pretrained", "interp-hf"))
    else:
        pairs = dict(kv.split("=", 1) for kv in model_args.split(",") if "=" in kv)
        pretrained = pairs.get("pretrained", "interp-hf")
    out = Path(output)
    base = out.parent if out.suffix == ".json" else out
    records = str(base / sanitize_model_name(pretrained))
    if model_args.strip().startswith("{"):
        parsed["records_dir"] = records
        new_args = json.dumps(parsed)
    else:
        new_args = f"{model_args},records_dir={records}" if model_args else f"records_dir={records}"
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg in ("--model_args", "-a"):
            argv[i + 1] = new_args
            break
        if arg.startswith("--model_args="):
            argv[i] = "--model_args=" + new_args
            break
    else:
        argv += ["--model_args", new_args]
    return argv


def run_lmeval(argv: list[str]) -> None:
    """lm-eval's CLI with the plugin registered and its tasks visible."""
    import lm_eval.models  # noqa: F401  (stock models first: see LMEVAL notes on the registry)
    from lm_eval.__main__ import cli_evaluate

    import lm_interp_plugin.harness.model  # noqa: F401  (registers interp-hf)

    if argv and argv[0] == "run":
        argv = with_records_dir(argv)
    old_argv = sys.argv
    sys.argv = ["lm-interp", *argv]
    try:
        with plugin_tasks_visible():
            cli_evaluate()
    finally:
        sys.argv = old_argv


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm-interp",
        description="Explain lm-eval runs: attribution, instruction attention and FFN concepts per example, "
        "and base-vs-tuned comparison reports.",
        epilog="run / ls / validate take exactly lm-eval's arguments (see `lm-interp run --help`).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (("run", "lm-eval run with interp-hf and the interp_* tasks available"),
                       ("ls", "lm-eval ls (tasks, groups, subtasks, tags), interp_* tasks included"),
                       ("validate", "lm-eval validate, interp_* tasks included")):
        sub.add_parser(name, help=text, add_help=False)

    cmp = sub.add_parser("compare", help="base-vs-tuned report from two or more run folders")
    cmp.add_argument("runs", nargs="+", type=Path, help="lm-eval --output_path folders (or model subfolders)")
    cmp.add_argument("--out", type=Path, required=True, help="folder for report.md, report.html, results.json")
    cmp.add_argument("--labels", type=str, default=None, help="comma-separated names for the runs")
    cmp.add_argument("--baseline", type=str, default=None, help="label of the baseline run (default: first)")
    cmp.add_argument("--heads", type=Path, nargs="*", default=None, help="explain-heads outputs, one per run")
    cmp.add_argument("--ffn", type=Path, nargs="*", default=None, help="explain-ffn outputs, one per run")
    cmp.add_argument("--examples", type=int, default=3, help="token heatmaps of this many examples per task")

    for name, text in (("explain-heads", "attention heads as word pairs (global, per model)"),
                       ("explain-ffn", "FFN principal components as concepts (global, per model)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("model", help="hub id or local folder of a causal LM")
        p.add_argument("--out", type=Path, required=True, help="output JSONL file")
        p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
        p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto")
        p.add_argument("--revision", default=None, help="model revision (branch, tag or commit)")
        p.add_argument("--top_k", type=int, default=None, help="words per dimension / component")
        p.add_argument("--layers", type=str, default=None, help="layers to explain, e.g. 0-3,7 (default: all)")
        if name == "explain-heads":
            p.add_argument("--vocab", type=Path, default=None, help="a word list (one per line) instead of the "
                           "tokenizer's whole words")
            p.add_argument("--compare", type=Path, default=None, help="a base model's heads.jsonl: print the "
                           "instruction-verb analysis (Table 3 form), base = this file, tuned = --out")
        else:
            p.add_argument("--k", type=int, default=None, help="principal components per layer")
            p.add_argument("--compare", type=Path, default=None, help="a base model's ffn.jsonl: print the "
                           "rotation and concept proportions (Table 5 form), base = this file, tuned = --out")

    demo = sub.add_parser("demo", help="the whole story on a tiny base/tuned pair built locally (CPU, minutes)")
    demo.add_argument("--out", type=Path, default=Path("lm_interp_demo"), help="output folder")
    demo.add_argument("--cache_dir", type=Path, default=None, help="where the built models are cached")
    demo.add_argument("--limit", type=int, default=None, help="examples per task (default: all)")
    demo.add_argument("--force", action="store_true", help="rebuild the models even if cached")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LMEVAL_COMMANDS:
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
