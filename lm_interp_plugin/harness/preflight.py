"""Checks of an `lm-interp run` command that take a second, made before lm-eval's start-up (~30 s on 2 cores).

A wrong ``pretrained`` (a folder that does not exist, a hub id that is neither cached nor reachable), a task
name that no task folder defines, or a bad ``interp_`` model argument fails here in one line that names the
input and the fix, instead of after the start-up and five retries to the hub. Light on purpose: of lm-eval
only its argument parser (`cli_args`), no torch or transformers import (``interp_`` arguments load torch
through `InterpSettings`, only when given).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cli_args import lmeval_args
from .local_data import DATA_DIR_ENV, hub_reachable

# lm-eval's `run --tasks` words that are not task names
_TASK_KEYWORDS = {"list", "list_groups", "list_tags", "list_subtasks", "list_tasks"}
_PATH_MODELS = ("interp-hf", "hf", "hf-auto", "huggingface")  # models whose pretrained is a folder or hub id
_TRUE = ("1", "ON", "YES", "TRUE")


class PreflightError(ValueError):
    """A `run` argument that cannot work; the message names it and the fix."""


# --- the plugin's tasks, read as text ---------------------------------------------------------------------


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
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # the YAML as read (`!function` as text)

    @property
    def data_files(self) -> dict[str, str]:
        """``metadata.interp.data_files``: split -> file (relative to the task folder); empty: a variant."""
        return dict(self.interp.get("data_files") or {})


def task_folder() -> Path:
    """The shipped task folder, found without importing lm-eval (`harness.tasks.tasks_dir` imports it)."""
    spec = importlib.util.find_spec("lm_interp_plugin.tasks")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "tasks"


def plugin_tasks(folders: Sequence[Path] | None = None) -> list[PluginTask]:
    """The interp task YAMLs in the plugin's task folder (and `folders`), sorted: shipped tasks, then
    variants. Fast: a text read of a few dozen files, no task index. `lm-interp run` reads them once and
    passes the list to each check (`check_run`, `launcher.check_plugin_task_data`)."""
    out: dict[str, PluginTask] = {}
    for folder in [task_folder(), *(folders or [])]:
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
            out[cfg["task"]] = PluginTask(cfg["task"], path, interp.get("base"), tags, summary, interp, cfg)
    return sorted(out.values(), key=lambda t: (t.base is not None, t.name))


def format_plugin_tasks(tasks: list[PluginTask]) -> str:
    """The `lm-interp ls` section of the plugin's tasks: name and what it is, variants with their data. The
    name column is as wide as the longest name, so no name runs into its description."""
    width = max((len(t.name) for t in tasks), default=10) + 2
    data_dir = os.environ.get(DATA_DIR_ENV)
    lines = [
        f"lm-interp tasks ({len(tasks)}; folder {task_folder()}):",
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


def include_paths(argv: Sequence[str]) -> list[Path]:
    """``--include_path``'s folders (lm-eval takes several joined by commas)."""
    value = lmeval_args(argv).include_path
    return [Path(p) for p in value.split(",")] if value else []


# --- lm-eval's task names, read as text --------------------------------------------------------------------

_NAME_KEYS = re.compile(
    r"^[ \t]*(?:-[ \t]*)?([\"']?)(?:task|group|tag)\1:[ \t]*(.*)$((?:\n[ \t]*-[ \t]*[^\s:]+[ \t]*$)*)", re.M
)


def yaml_task_names(folders: Sequence[Path]) -> set[str]:
    """Every ``task:``, ``group:`` and ``tag:`` value (scalars, inline and block lists, quoted keys) in the
    task configs under `folders` and the templates they include: lm-eval's names without building its task
    index (a regex over ~14,000 files, 1 to 3 s of CPU, against 10 to 40 s for the index). Checked against
    lm-eval 0.4.13's index on 2026-12-03: it finds all 14,683 of its names (and a few more: a superset only
    lets a typo through to lm-eval's own error)."""
    names: set[str] = set()
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                if not (name.endswith(("yaml", ".yml", "_template")) or "." not in name):
                    continue  # configs, and the templates they include (`_default_template_yaml`, `flores`)
                try:
                    text = Path(root, name).read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                for match in _NAME_KEYS.finditer(text):
                    inline = match.group(2).split("#", 1)[0].strip().strip("[]")
                    words = inline.split(",") + re.findall(r"-\s*([^\s:]+)", match.group(3))
                    names.update(w.strip(" '\"") for w in words if w.strip(" '\"") and "!" not in w)
    return names


def lmeval_tasks_folder() -> Path | None:
    """The installed lm-eval's task folder, found without importing lm-eval."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "tasks"
    return folder if folder.is_dir() else None


def check_tasks(
    text: str | None, folders: Sequence[Path] = (), tasks: Sequence[PluginTask] | None = None
) -> None:
    """Every ``--tasks`` entry is a task file that exists or a name (or pattern) some task folder defines;
    otherwise one line with the closest names and where to list them. `tasks`: `plugin_tasks(folders)`,
    when the caller has read them already."""
    entries = [t.strip() for t in (text or "").split(",") if t.strip()]
    ours = [t.name for t in (plugin_tasks(folders) if tasks is None else tasks)]
    unknown = []
    for entry in entries:
        if entry in _TASK_KEYWORDS or any(fnmatch.fnmatchcase(name, entry) for name in ours):
            continue
        if entry.endswith((".yaml", ".yml")) or os.sep in entry:
            if not Path(entry).expanduser().exists():
                raise PreflightError(f"--tasks {entry}: no such task file ({Path(entry).resolve()})")
            continue
        unknown.append(entry)
    if not unknown:
        return
    known = list(ours)
    stock = lmeval_tasks_folder()
    if folders or stock is not None and any(not e.startswith("interp_") for e in unknown):
        # interp_* is the plugin's namespace: a miss there needs no scan of lm-eval's 14,000 YAMLs
        known += sorted(yaml_task_names([*folders, *([stock] if stock else [])]))
        unknown = [e for e in unknown if not any(fnmatch.fnmatchcase(name, e) for name in known)]
    if not unknown:
        return
    entry = unknown[0]
    guesses = difflib.get_close_matches(entry, known, n=3, cutoff=0.75) or difflib.get_close_matches(
        entry, ours, n=3, cutoff=0.6
    )
    hint = f"did you mean {' or '.join(guesses)}? " if guesses else ""
    others = f" (and {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
    raise PreflightError(
        f"--tasks {entry}{others}: no such task; {hint}the plugin's tasks: "
        "`lm-interp ls tasks --plugin-only`, all tasks: `lm-interp ls tasks`; your own: --include_path FOLDER"
    )


# --- pretrained --------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """Whether huggingface_hub / transformers were told not to touch the network."""
    return any(os.environ.get(k, "").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_cached(repo_id: str, revision: str | None) -> bool:
    """Whether the local Hugging Face cache holds the model (its config.json, or any snapshot of it)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        return True
    snapshots = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def _is_repo_id(value: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def _near_folder(path: Path) -> str:
    """'; did you mean X?' when the folder's parent exists and holds a similar name."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return f"; {parent} does not exist either" if str(parent) not in (".", "/") else ""
    entries = sorted(p.name for p in parent.iterdir())
    guess = difflib.get_close_matches(path.name, entries, n=1, cutoff=0.6)
    return f"; did you mean {parent / guess[0]}?" if guess else ""


def check_pretrained(value: str | None, revision: str | None = None) -> None:
    """A local folder that exists, or a hub id that is cached or can be downloaded; else one line."""
    if not value:
        return
    path = Path(value).expanduser()
    if path.exists():
        return
    where = path if path.is_absolute() else Path.cwd() / path
    fix = "give the folder of a saved model (save_pretrained) or a Hugging Face hub id"
    if value.startswith(("/", ".", "~")) or "\\" in value or value.endswith("/") or not _is_repo_id(value):
        raise PreflightError(
            f"pretrained={value}: no such folder ({where} does not exist){_near_folder(path)}; {fix}"
        )
    if _hub_cached(value, revision):
        return
    folder = f"no folder {where}{_near_folder(path)}, and "
    if hub_offline():
        raise PreflightError(
            f"pretrained={value}: {folder}the hub model {value} is not in the local Hugging Face cache while "
            f"offline (HF_HUB_OFFLINE); fix the path, or download it where the hub is reachable "
            f"(`hf download {value}`) and run again"
        )
    if not hub_reachable():
        host = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        raise PreflightError(
            f"pretrained={value}: {folder}the hub model {value} is not in the local Hugging Face cache and "
            f"{host} cannot be reached; fix the path, or download it where the hub is reachable "
            f"(`hf download {value}`) and run again"
        )


def check_interp_args(model_args: dict[str, Any]) -> None:
    """interp-hf's ``interp_`` arguments, checked as the model will check them (names, types, choices)."""
    interp = {k: v for k, v in model_args.items() if k.startswith("interp_")}
    if not interp:
        return
    from ..interpret.settings import InterpSettings

    try:
        InterpSettings.from_kwargs(interp)
    except ValueError as err:
        raise PreflightError(str(err)) from None  # names the key and the valid values


def check_run(argv: Sequence[str], tasks: Sequence[PluginTask] | None = None) -> None:
    """All of the above for `run` arguments (argv without the leading 'run'), before lm-eval starts.
    `tasks`: the plugin's task listing (`plugin_tasks(include_paths(argv))`), when the caller has it."""
    args = lmeval_args(argv)
    if not args.parsed:  # --help, or a command line lm-eval rejects: it says so itself
        return
    model, model_args = args.model, args.model_args
    if model == "interp-hf":  # loads torch (~2 s of CPU), only when interp_ arguments are given
        check_interp_args(model_args)
    if model in _PATH_MODELS:
        pretrained = model_args.get("pretrained")
        check_pretrained(str(pretrained) if pretrained is not None else None, model_args.get("revision"))
    check_tasks(",".join(args.tasks), include_paths(argv), tasks)
