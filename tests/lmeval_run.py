"""The tests' one way to run lm-eval: `lm_eval.simple_evaluate` on the CPU, the plugin registered, its task
folder visible, no bootstrap; with `out`, lm-eval's results and samples files written as its CLI does."""

from __future__ import annotations

import functools
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
