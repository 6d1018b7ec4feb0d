"""An lm-eval command line read the way lm-eval reads it, for the checks made before it starts.

`lm-interp run/ls/validate` looks at a few of lm-eval's flags before handing argv over (the preflight
checks, the records folder, the plugin-tasks-only fast start). Reading them by hand drifted from lm-eval:
argparse takes abbreviations (``--task``) and short forms (``-M``, ``-t``, ``-a``, ``-o``), lm-eval 0.4.13
extends ``--tasks`` over repeats and merges repeated ``--model_args``. So every flag comes from lm-eval's own
parser (`lm_eval._cli.harness.HarnessCLI`: argparse only, ~30 ms, no torch), with its legacy rule (a command
line without a subcommand is a ``run``) and its ``--config`` YAML under the command line's flags.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: lm-eval's subcommands (`HarnessCLI`)
COMMANDS = ("run", "ls", "validate")


@dataclass(frozen=True)
class LmEvalArgs:
    """The flags the plugin reads, as lm-eval's parser gives them.

    Attributes:
        command: ``run``, ``ls`` or ``validate``.
        tasks: ``--tasks`` entries, split on commas, over every repeat.
        model_args: ``--model_args`` merged over repeats, values typed as lm-eval types them.
        parsed: False where lm-eval's parser rejects argv (a flag without its value, ``--help``): every
            field is then empty, and lm-eval reports the problem itself when it runs.
    """

    command: str | None = None
    model: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = ()
    output_path: str | None = None
    include_path: str | None = None
    parsed: bool = False


def lmeval_args(argv: Sequence[str]) -> LmEvalArgs:
    """`argv` (``run --model ...``, or a run's flags without the subcommand) as lm-eval reads it. Parsed
    anew each call (a few ms): a ``--config`` file may have changed since the last one."""
    from lm_eval._cli.harness import HarnessCLI

    args = list(argv)
    if not args or args[0] not in COMMANDS:
        args.insert(0, "run")  # lm-eval's legacy rule (HarnessCLI.parse_args)
    parser: argparse.ArgumentParser = HarnessCLI()._parser
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ns, _unknown = parser.parse_known_args(args)
    except SystemExit:  # an argparse error or --help: lm-eval prints it when it runs
        return LmEvalArgs()
    values = {k: v for k, v in vars(ns).items() if v or v == 0}
    if values.get("config"):  # lm-eval's precedence (EvaluatorConfig.from_cli): command line over the YAML
        values = {**_config_file(values["config"]), **values}
    tasks = values.get("tasks") or ()
    if isinstance(tasks, str):  # `validate --tasks`, or a config file's comma-separated string
        tasks = tasks.split(",")
    return LmEvalArgs(
        command=ns.command,
        model=values.get("model"),
        model_args=_model_args(values.get("model_args")),
        tasks=tuple(str(t).strip() for t in tasks if t and str(t).strip()),
        output_path=values.get("output_path"),
        include_path=values.get("include_path"),
        parsed=True,
    )


def _config_file(path: str) -> dict[str, Any]:
    """The ``--config`` YAML as lm-eval reads it; empty where it cannot (lm-eval then names the file)."""
    from lm_eval.config.evaluate_config import EvaluatorConfig

    try:
        return EvaluatorConfig.load_yaml_config(path)
    except (OSError, ValueError, TypeError):
        return {}


def _model_args(value: Any) -> dict[str, Any]:
    """``model_args`` as a dict: the command line's is one already, a config file's may be ``k=v,k=v``."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str) and value.strip():
        from lm_eval._cli.utils import key_val_to_dict, try_parse_json

        parsed = try_parse_json(value)
        try:
            return dict(parsed) if isinstance(parsed, dict) else key_val_to_dict(value)
        except ValueError:  # lm-eval rejects it with its own message when it runs
            return {}
    return {}
