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
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .tasks import tasks_dir


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


def run_lmeval(argv: list[str], builtin_tasks: bool = True) -> None:
    """lm-eval's CLI with the plugin registered and its tasks visible (lm-eval's own tasks too, unless
    `builtin_tasks` is False: see `plugin_tasks_visible`)."""
    import lm_eval.models  # noqa: F401  (stock models first: see LMEVAL notes on the registry)
    from lm_eval.__main__ import cli_evaluate

    from . import model  # noqa: F401  (registers interp-hf)

    if argv and argv[0] == "run":
        argv = with_records_dir(argv)
    old_argv = sys.argv
    sys.argv = ["lm-interp", *argv]
    try:
        with plugin_tasks_visible(builtin_tasks=builtin_tasks):
            cli_evaluate()
    finally:
        sys.argv = old_argv
