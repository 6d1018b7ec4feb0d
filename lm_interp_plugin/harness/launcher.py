"""lm-eval's own CLI with the plugin loaded: the model `interp-hf` registered, the shipped task folder
visible.

lm-eval 0.4.13 has no plugin discovery (see ../shared/LMEVAL_NOTES.md), so the bridge its maintainers suggest
is
this: import the plugin, put its task folder on every TaskManager's include path (the user's own
``--include_path`` still wins), and call ``lm_eval.__main__.cli_evaluate``. It also decides where records go
under ``run --output_path``: beside lm-eval's samples.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .cli_args import lmeval_args
from .local_data import dataset_status
from .outputs import failed_writes_raise
from .preflight import (  # noqa: F401  (PluginTask: re-exported, the listing's record)
    PluginTask,
    _AnyTagLoader,
    format_plugin_tasks,
    include_paths,
    plugin_tasks,
    task_folder,
)
from .tasks import check_local_data, tasks_dir

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def plugin_tasks_visible(builtin_tasks: bool = True) -> Iterator[Path]:
    """Make every TaskManager built inside see the plugin's task folder (besides the user's include paths).

    `builtin_tasks=False` also leaves lm-eval's own ~15,000 task configs unindexed (`include_defaults=False`):
    indexing them takes 10 to 40 s on 2 CPU cores, each time a TaskManager is built.
    """
    from lm_eval.tasks import TaskManager

    ours = tasks_dir()
    original = TaskManager.__init__

    def patched(self, *args, include_path=None, **kwargs):
        paths = (
            []
            if include_path is None
            else (list(include_path) if isinstance(include_path, (list, tuple)) else [include_path])
        )
        if not any(Path(p).resolve() == ours.resolve() for p in paths):
            paths.insert(0, ours)  # later paths override earlier ones: the user's win
        if not builtin_tasks:  # a caller that asks for lm-eval's own tasks by name still gets them
            kwargs.setdefault("include_defaults", False)
        original(self, *args, include_path=paths, **kwargs)

    TaskManager.__init__ = patched
    try:
        yield ours
    finally:
        TaskManager.__init__ = original


def plugin_tasks_only(argv: Sequence[str], tasks: Sequence[PluginTask]) -> bool:
    """Whether a `run` names only the plugin's own tasks, each exactly (no pattern, tag, group or YAML path),
    and no ``--include_path``: then lm-eval needs none of its ~15,000 stock configs (`builtin_tasks=False`
    of `plugin_tasks_visible`), which take ~7 s of CPU to index. Variants (`interp_arc_easy`) qualify:
    they find their stock config by a text scan (`variants.stock_yaml_path`)."""
    args = lmeval_args(argv)
    if argv[:1] != ["run"] or args.include_path is not None:
        return False
    names = args.tasks
    folder = task_folder().resolve()
    ours = {t.name for t in tasks if folder in t.path.resolve().parents}
    return bool(names) and all(name in ours for name in names)


def with_records_dir(argv: list[str]) -> list[str]:
    """For `run --model interp-hf --output_path P`, put the records beside lm-eval's samples:
    ``records_dir=P/<sanitized model name>`` (unless the user gave records_dir), as one more ``--model_args``
    holding every model argument (lm-eval 0.4.13 merges repeated ones, and a command-line ``--model_args``
    replaces a ``--config`` file's, so the file's arguments are carried over)."""
    from lm_eval.utils import sanitize_model_name

    args = lmeval_args(argv)
    if args.model != "interp-hf" or not args.output_path or "records_dir" in args.model_args:
        return argv
    pretrained = str(args.model_args.get("pretrained", "interp-hf"))
    out = Path(args.output_path)
    base = out.parent if out.suffix == ".json" else out
    records = str(base / sanitize_model_name(pretrained))
    return [*argv, "--model_args", json.dumps({**args.model_args, "records_dir": records})]


def validate_data(argv: Sequence[str], tasks: Sequence[PluginTask] | None = None) -> list[str]:
    """For `validate`: per interp variant among ``--tasks``, where its data would come from; lines that say
    MISSING or UNREACHABLE mean the task cannot run here as it stands (`tasks`: as in
    `check_plugin_task_data`)."""
    from .segment import SegmentationError
    from .variants import stock_task_config

    patterns = lmeval_args(argv).tasks
    lines = []
    for task in plugin_tasks(include_paths(argv)) if tasks is None else tasks:
        if not task.base or not any(fnmatch.fnmatchcase(task.name, p) for p in patterns):
            continue
        try:
            config = stock_task_config(task.base)
        except SegmentationError as err:  # an unknown stock task
            lines.append(f"{task.name}: data: MISSING (stock task {task.base!r}: {err})")
            continue
        lines.append(f"{task.name}: {dataset_status(task.base, task.interp, config)}")
    return lines


def check_plugin_task_data(argv: Sequence[str], tasks: Sequence[PluginTask] | None = None) -> None:
    """Check the local data of the plugin tasks among ``--tasks`` (`tasks.check_local_data`) before
    lm-eval starts: it loads the model first and reads the data after, and its data errors name no file.
    `tasks`: the listing `preflight.check_run` read (`plugin_tasks(include_paths(argv))`), else read here."""
    names = lmeval_args(argv).tasks
    for task in plugin_tasks(include_paths(argv)) if tasks is None else tasks:
        if task.data_files and any(fnmatch.fnmatchcase(task.name, p) for p in names):
            check_local_data(task.config)


def _strip_flag(argv: list[str], flag: str) -> tuple[list[str], bool]:
    return [a for a in argv if a != flag], flag in argv


def run_lmeval(
    argv: list[str], builtin_tasks: bool | None = None, tasks: Sequence[PluginTask] | None = None
) -> None:
    """lm-eval's CLI with the plugin registered and its tasks visible (lm-eval's own tasks too, unless
    `builtin_tasks` is False: see `plugin_tasks_visible`; None: only when the run needs them, see
    `plugin_tasks_only`); `tasks`: the plugin's task listing, when the caller has read it
    (`plugin_tasks(include_paths(argv))`).

    ``ls`` prints the plugin's tasks first (``--plugin-only``: only them, in a second); ``validate`` adds
    where each interp variant's data would come from and fails when it cannot be had; ``run --help`` adds
    interp-hf's model arguments.
    """
    listing = plugin_tasks(include_paths(argv)) if tasks is None else list(tasks)
    if argv and argv[0] == "ls":
        argv, plugin_only = _strip_flag(argv, "--plugin-only")
        print(format_plugin_tasks(listing), flush=True)
        if plugin_only:
            return
        print("\nlm-eval's tasks (the full index takes a while to build):", flush=True)
    import lm_eval.models  # noqa: F401  (stock models first: see LMEVAL notes on the registry)
    from lm_eval.__main__ import cli_evaluate

    from . import model  # noqa: F401  (registers interp-hf)

    if argv and argv[0] == "run":
        argv = with_records_dir(argv)
        check_plugin_task_data(argv, listing)
    if builtin_tasks is None:
        builtin_tasks = not plugin_tasks_only(argv, listing)
        logger.debug("lm-eval's own task index: %s", "built" if builtin_tasks else "skipped (plugin tasks)")
    old_argv = sys.argv
    sys.argv = ["lm-interp", *argv]
    try:
        with (
            plugin_tasks_visible(builtin_tasks=builtin_tasks),
            failed_writes_raise(lmeval_args(argv).output_path),
        ):
            cli_evaluate()
    except SystemExit as done:
        if argv[:1] == ["run"] and ("--help" in argv or "-h" in argv) and not done.code:
            print(model_arguments_help())
        raise
    finally:
        sys.argv = old_argv
    if argv[:1] == ["validate"]:
        lines = validate_data(argv, listing)
        for line in lines:
            print(line)
        bad = [line for line in lines if "MISSING" in line or "UNREACHABLE" in line]
        if bad:
            print(f"{len(bad)} interp task(s) cannot load their data here (see above; README: offline)")
            raise SystemExit(1)


def model_arguments_help() -> str:
    """interp-hf's `--model_args` with defaults, generated from `InterpSettings` (the one source; README's
    table is checked against it)."""
    from ..interpret.settings_reference import settings_reference

    rows = [
        (
            "records_dir",
            "--output_path/<model> under lm-interp run, else $LM_INTERP_RECORDS_DIR or "
            "./lm_interp_records/<model>",
            "where the per-example records go; a rerun resumes from them",
        ),
        *settings_reference(),
    ]
    width = max(len(name) for name, _, _ in rows) + 2
    lines = [
        "",
        "interp-hf model arguments (--model interp-hf --model_args pretrained=PATH,KEY=VALUE,...):",
        "  everything of lm-eval's hf model (pretrained, dtype, device, revision, parallelize, ...), plus:",
    ]
    for name, default, meaning in rows:
        lines.append(f"  {name:<{width}}default {default}")
        lines.append(f"  {'':<{width}}{meaning}")
    lines.append("  tasks: `lm-interp ls tasks --plugin-only`; records and reports: README")
    return "\n".join(lines)
