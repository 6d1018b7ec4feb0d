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
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .local_data import DATA_DIR_ENV, dataset_status
from .outputs import failed_writes_raise
from .tasks import check_local_data, tasks_dir


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
        if not builtin_tasks:
            kwargs["include_defaults"] = False
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


class _AnyTagLoader(yaml.SafeLoader):
    """Reads task YAMLs without importing anything: ``!function ...`` becomes its text."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix} {node.value}")


@dataclass
class PluginTask:
    """One task YAML of the plugin (or of a user's variants folder), read as text: no lm-eval, no data."""

    name: str
    path: Path
    base: str | None = None  # the stock task a variant wraps
    tags: list[str] = field(default_factory=list)
    summary: str = ""
    interp: dict[str, Any] = field(default_factory=dict)


def plugin_tasks(folders: Sequence[Path] | None = None) -> list[PluginTask]:
    """The interp task YAMLs in the plugin's task folder (and `folders`), sorted: shipped tasks, then
    variants. Fast: a text read of a few dozen files, no task index."""
    out: dict[str, PluginTask] = {}
    for folder in [tasks_dir(), *(folders or [])]:
        for path in sorted(Path(folder).rglob("*.yaml")):
            try:
                cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_AnyTagLoader)
            except (OSError, yaml.YAMLError):
                continue
            if not isinstance(cfg, dict) or not isinstance(cfg.get("task"), str):
                continue
            interp = dict((cfg.get("metadata") or {}).get("interp") or {})
            if not str(cfg.get("class", "")).startswith("!function") and not interp:
                continue  # not an interp task
            tags = cfg.get("tag") or []
            tags = [tags] if isinstance(tags, str) else list(tags)
            first = path.read_text(encoding="utf-8").splitlines()[0]
            summary = first.lstrip("# ").strip() if first.startswith("#") else ""
            if interp.get("base"):
                summary = f"lm-eval's {interp['base']} + interpretation"
            else:
                summary = summary or str(cfg.get("output_type", ""))
            out[cfg["task"]] = PluginTask(cfg["task"], path, interp.get("base"), tags, summary, interp)
    return sorted(out.values(), key=lambda t: (t.base is not None, t.name))


def format_plugin_tasks(tasks: list[PluginTask]) -> str:
    """The `lm-interp ls` section of the plugin's tasks: name and what it is, variants with their data."""
    width = min(max((len(t.name) for t in tasks), default=10), 30) + 2
    data_dir = os.environ.get(DATA_DIR_ENV)
    lines = [
        f"lm-interp tasks ({len(tasks)}; folder {tasks_dir()}):",
        "  run them with `lm-interp run --model interp-hf --tasks NAME` (or stock lm_eval with "
        "`--tasks PATH/NAME.yaml`)",
    ]
    for t in tasks:
        text = t.summary
        if t.base and data_dir and (Path(data_dir) / t.base).is_dir():
            text += f"; data: local copy {Path(data_dir) / t.base}"
        elif t.base:
            text += f"; data: hub or ${DATA_DIR_ENV}/{t.base}"
        lines.append(f"  {t.name:<{width}}{text}")
    tags: dict[str, int] = {}
    for t in tasks:
        for tag in t.tags:
            tags[tag] = tags.get(tag, 0) + 1
    if tags:
        lines.append("  tags: " + ", ".join(f"{tag} ({n} tasks)" for tag, n in sorted(tags.items())))
    return "\n".join(lines)


def check_plugin_task_data(argv: Sequence[str]) -> None:
    """Check the local data of the plugin tasks among ``--tasks`` (`tasks.check_local_data`) before
    lm-eval starts: it loads the model first and reads the data after, and its data errors name no file."""
    names = [p for p in (_option(argv, "--tasks", "-t") or "").split(",") if p]
    for task in plugin_tasks(_include_paths(argv)):
        if task.interp.get("data_files") and any(fnmatch.fnmatchcase(task.name, p) for p in names):
            check_local_data(yaml.load(task.path.read_text(encoding="utf-8"), Loader=_AnyTagLoader))


def _include_paths(argv: Sequence[str]) -> list[Path]:
    value = _option(argv, "--include_path")
    return [Path(p) for p in value.split(",")] if value else []


def validate_data(argv: Sequence[str]) -> list[str]:
    """For `validate`: per interp variant among ``--tasks``, where its data would come from; lines that say
    MISSING or UNREACHABLE mean the task cannot run here as it stands."""
    from .segment import SegmentationError
    from .variants import stock_task_config

    patterns = [p for p in (_option(argv, "--tasks", "-t") or "").split(",") if p]
    lines = []
    for task in plugin_tasks(_include_paths(argv)):
        if not task.base or not any(fnmatch.fnmatchcase(task.name, p) for p in patterns):
            continue
        try:
            config = stock_task_config(task.base)
        except SegmentationError as err:  # an unknown stock task
            lines.append(f"{task.name}: data: MISSING (stock task {task.base!r}: {err})")
            continue
        lines.append(f"{task.name}: {dataset_status(task.base, task.interp, config)}")
    return lines


def _strip_flag(argv: list[str], flag: str) -> tuple[list[str], bool]:
    return [a for a in argv if a != flag], flag in argv


def run_lmeval(argv: list[str], builtin_tasks: bool = True) -> None:
    """lm-eval's CLI with the plugin registered and its tasks visible (lm-eval's own tasks too, unless
    `builtin_tasks` is False: see `plugin_tasks_visible`).

    ``ls`` prints the plugin's tasks first (``--plugin-only``: only them, in a second); ``validate`` adds
    where each interp variant's data would come from and fails when it cannot be had; ``run --help`` adds
    interp-hf's model arguments.
    """
    if argv and argv[0] == "ls":
        argv, plugin_only = _strip_flag(argv, "--plugin-only")
        print(format_plugin_tasks(plugin_tasks(_include_paths(argv))), flush=True)
        if plugin_only:
            return
        print("\nlm-eval's tasks (the full index takes a while to build):", flush=True)
    import lm_eval.models  # noqa: F401  (stock models first: see LMEVAL notes on the registry)
    from lm_eval.__main__ import cli_evaluate

    from . import model  # noqa: F401  (registers interp-hf)

    if argv and argv[0] == "run":
        argv = with_records_dir(argv)
        check_plugin_task_data(argv)
    old_argv = sys.argv
    sys.argv = ["lm-interp", *argv]
    try:
        with (
            plugin_tasks_visible(builtin_tasks=builtin_tasks),
            failed_writes_raise(_option(argv, "--output_path", "-o")),
        ):
            cli_evaluate()
    except SystemExit as done:
        if argv[:1] == ["run"] and ("--help" in argv or "-h" in argv) and not done.code:
            print(model_arguments_help())
        raise
    finally:
        sys.argv = old_argv
    if argv[:1] == ["validate"]:
        lines = validate_data(argv)
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
