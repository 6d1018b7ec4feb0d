"""The tests' one way to run lm-eval: `lm_eval.simple_evaluate` on the CPU, the plugin registered, its task
folder visible, no bootstrap; with `out`, lm-eval's results and samples files written as its CLI does. And
the one way to run its CLI (`lm_eval ...`, `lm-interp ...`) as a subprocess: `run_cli`, `cli_run`."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=2)
def plugin_task_manager(include_defaults: bool = False):
    """The plugin's task folder as lm-eval indexes it, built once per test process (indexing lm-eval's ~15,000
    stock configs costs ~7 s of CPU: `include_defaults=True` only for a test that needs a stock task)."""
    from lm_eval.tasks import TaskManager

    import lm_interp_plugin.harness.model  # noqa: F401  (registers interp-hf)
    from lm_interp_plugin.harness.tasks import tasks_dir

    return TaskManager(include_path=[tasks_dir()], include_defaults=include_defaults)


def run_lmeval(
    model_args: str,
    tasks: list[Any],
    model: str = "interp-hf",
    limit: int | None = None,
    task_manager: Any = None,
    out: Path | None = None,
    log_samples: bool = True,
    **kwargs: Any,
) -> dict:
    """One evaluation; `tasks` are names (looked up in `task_manager`, the plugin's by default) or tasks."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker

    import lm_interp_plugin.harness.model  # noqa: F401  (registers interp-hf)

    if task_manager is None and any(isinstance(task, str) for task in tasks):
        task_manager = plugin_task_manager()
    tracker = EvaluationTracker(output_path=str(out)) if out is not None else None
    results = lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=list(tasks),
        limit=limit,
        log_samples=log_samples,
        task_manager=task_manager,
        bootstrap_iters=0,
        device="cpu",
        evaluation_tracker=tracker,
        **kwargs,
    )
    if tracker is not None:
        samples = results.pop("samples")
        tracker.save_results_aggregated(results=results, samples=samples)
        for task in results["results"]:
            if task in samples:
                tracker.save_results_samples(task_name=task, samples=samples[task])
        results["samples"] = samples
    return results


# The console scripts, as modules of this Python (the test's venv, whatever is on PATH)
CLI_MODULES = {"lm_eval": "lm_eval", "lm-interp": "lm_interp_plugin"}
QUIET_ENV = {"PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}


def run_cli(
    program: str,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    quiet: bool = True,
    launcher: Sequence[str] = (),
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """`lm_eval ARGS` or `lm-interp ARGS` in a subprocess (``python -m``), output captured as text.

    `quiet`: library warnings off (tests that check what the user sees on stderr pass False); `env`: added to
    the environment; `launcher`: ``python -m`` arguments before the program's (``torch.distributed.run ...``).
    """
    module = CLI_MODULES[program]
    command = [sys.executable, "-m", *launcher, *(["-m"] if launcher else []), module, *args]
    full_env = {**os.environ, **(QUIET_ENV if quiet else {}), **(env or {})}
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def cli_run(
    program: str,
    model_args: str,
    tasks: str,
    *,
    model: str = "interp-hf",
    limit: int | None = None,
    out: Path | None = None,
    extra: Sequence[str] = (),
    **kwargs: Any,
) -> subprocess.CompletedProcess:
    """`PROGRAM run --model MODEL --model_args ARGS --tasks TASKS [--limit N] [--log_samples --output_path
    OUT] EXTRA` through `run_cli` (its keywords pass on)."""
    args = ["run", "--model", model, "--model_args", model_args, "--tasks", tasks]
    if limit is not None:
        args += ["--limit", str(limit)]
    if out is not None:
        args += ["--log_samples", "--output_path", str(out)]
    return run_cli(program, *args, *extra, **kwargs)
