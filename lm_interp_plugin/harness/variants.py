"""`interp_` variants of installed lm-eval tasks, and the task YAML files the plugin writes.

A variant YAML names its stock task (``metadata.interp.base``) and holds no copy of its config:
`InterpVariant` loads the stock config at construction and adds the interpretation metrics. Every YAML the
plugin writes (variants, the demo's tasks) goes through `write_task_yaml`, which also puts the one class shim
(`SHIM_TEXT`) beside it, because lm-eval's ``!function`` loader imports a ``.py`` file next to the YAML, not a
package.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from copy import deepcopy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .local_data import (
    DatasetUnavailableError,
    hub_reachable,
    load_local_dataset,
    local_data_path,
    unavailable_message,
)
from .segment import SegmentationError
from .tasks import InterpTask

logger = logging.getLogger(__name__)

SHIM = "interp_task.py"
SHIM_TEXT = '''"""Shim for lm-eval's `!function` loader, which imports a .py file beside the YAML rather than
a package.

Importing it registers the `interp-hf` model too, which is what makes the stock
`lm_eval --model interp-hf --tasks path/to/interp_instruct.yaml` work. Written by
lm_interp_plugin.harness.variants.
"""

import lm_interp_plugin.harness.model  # noqa: F401  (registers interp-hf)
from lm_interp_plugin.harness.tasks import InterpTask  # noqa: F401
from lm_interp_plugin.harness.variants import InterpVariant  # noqa: F401
'''
TASK_CLASSES = ("InterpTask", "InterpVariant")


class _TaskDumper(yaml.SafeDumper):
    """Writes ``class`` as lm-eval's ``!function interp_task.<Class>`` tag."""


class _FunctionTag(str):
    pass


_TaskDumper.add_representer(
    _FunctionTag, lambda dumper, value: dumper.represent_scalar("!function", str(value))
)


def write_shim(folder: str | Path) -> Path:
    """The class shim beside task YAMLs in `folder` (rewritten when it differs from `SHIM_TEXT`)."""
    path = Path(folder) / SHIM
    if not path.is_file() or path.read_text(encoding="utf-8") != SHIM_TEXT:
        path.write_text(SHIM_TEXT, encoding="utf-8")
    return path


def write_task_yaml(path: str | Path, config: Mapping[str, Any]) -> Path:
    """Write an lm-eval task YAML whose ``class`` (one of `TASK_CLASSES`) is loaded through the shim."""
    path = Path(path)
    config = dict(config)
    cls = config.get("class")
    if cls not in TASK_CLASSES:
        raise ValueError(f"task class {cls!r} is not one of {TASK_CLASSES}")
    config["class"] = _FunctionTag(f"{SHIM[:-3]}.{cls}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_shim(path.parent)
    path.write_text(
        yaml.dump(config, Dumper=_TaskDumper, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return path


def _stock_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@lru_cache(maxsize=1)
def _stock_text_index() -> dict[str, list[Path]]:
    pattern = re.compile(r"""^["']?task["']?\s*:\s*["']?([\w\-\.]+)["']?\s*$""", re.MULTILINE)
    index: dict[str, list[Path]] = {}
    for path in sorted(_stock_tasks_dir().rglob("*.yaml")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for name in pattern.findall(text):
            index.setdefault(name, []).append(path)
    return index


def stock_yaml_path(name: str) -> Path:
    """The installed lm-eval YAML that defines task `name` (a text scan, ~10x faster than the TaskManager)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    for path in _stock_text_index().get(name, []):
        if load_yaml(path, resolve_func=False).get("task") == name:
            return path
    from lm_eval.tasks import TaskManager  # slow path: generated names

    entry = getattr(TaskManager(include_defaults=True), "_index", {}).get(
        name
    )  # even inside a plugin-only run
    if entry is not None and getattr(entry, "yaml_path", None):
        return Path(entry.yaml_path)
    raise SegmentationError(f"no installed lm-eval task named {name!r}; check `lm_eval ls tasks`")


def stock_task_config(name: str) -> dict[str, Any]:
    """The stock config of task `name` (includes merged, `!function`s resolved against the stock folder)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = deepcopy(load_yaml(stock_yaml_path(name), resolve_func=True))
    for key in ("tag", "group", "task_list", "class"):
        cfg.pop(key, None)
    return cfg


def variant_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Stock config of ``metadata.interp.base`` overlaid with `config` (its task name, metadata,
    overrides)."""
    config = dict(config)
    metadata = dict(config.get("metadata") or {})
    interp = dict(metadata.get("interp") or {})
    base = interp.get("base")
    if not base:
        return config
    stock = stock_task_config(base)
    merged = {**stock, **{k: v for k, v in config.items() if k not in ("metadata", "class")}}
    merged["metadata"] = {**(stock.get("metadata") or {}), **metadata, "interp": {"auto": True, **interp}}
    return merged


def variant_name(task_name: str) -> str:
    """The interp_ name of a stock task."""
    return task_name if task_name.startswith("interp_") else f"interp_{task_name}"


def write_variant(task_name: str, out_dir: str | Path, parts: Mapping[str, str] | None = None) -> Path:
    """Write ``interp_<task>.yaml`` (and the class shim) into `out_dir`; use it with ``--include_path
    out_dir``.

    Works for any installed lm-eval task; the YAML holds no copy of the stock config, only its name.
    """
    stock_yaml_path(task_name)  # fail early on an unknown name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    interp: dict[str, Any] = {"base": task_name}
    if parts:
        interp["parts"] = dict(parts)
    config = {"task": variant_name(task_name), "class": "InterpVariant", "metadata": {"interp": interp}}
    return write_task_yaml(out / f"{variant_name(task_name)}.yaml", config)


def save_local_copy(base_task: str, data_dir: str | Path) -> Path:
    """Download `base_task`'s dataset as its stock config loads it into ``data_dir/<base_task>``
    (``save_to_disk``), for ``LM_INTERP_DATA_DIR=data_dir`` on a machine without the hub. Needs the hub."""
    import datasets

    cfg = stock_task_config(base_task)
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    kwargs.pop("trust_remote_code", None)
    loaded = datasets.load_dataset(cfg["dataset_path"], cfg.get("dataset_name"), **kwargs)
    out = Path(data_dir) / base_task
    loaded.save_to_disk(str(out))
    return out


class InterpVariant(InterpTask):
    """An installed lm-eval task (``metadata.interp.base``) with the interpretation metrics."""

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config=variant_config(config or {}), **kwargs)

    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """The stock dataset, from a local copy when one is configured (`local_data`); without one and
        without the hub, one `DatasetUnavailableError` line instead of retries and a long traceback."""
        interp = dict((self.config.metadata or {}).get("interp") or {})
        if interp.get("data_files"):  # files named in the YAML: InterpTask reads them
            super().download(dataset_kwargs, **kwargs)
            self._fit_splits("metadata.interp.data_files")
            return
        base = str(interp.get("base") or self.config.task)
        local = local_data_path(base, interp)
        if local is not None:
            logger.info("%s: dataset from the local copy %s", self.config.task, local)
            self.dataset = load_local_dataset(local)
            self._fit_splits(f"the local copy {local}")
            return
        dataset = "/".join(str(x) for x in (self.config.dataset_path, self.config.dataset_name) if x)
        if self.config.custom_dataset is None and not hub_reachable():
            reason = "the Hugging Face hub is unreachable"
            raise DatasetUnavailableError(unavailable_message(str(self.config.task), base, dataset, reason))
        try:
            super().download(dataset_kwargs, **kwargs)
        except ConnectionError as err:  # datasets' own ConnectionError is a subclass
            reason = " ".join(str(err).split())[:200]
            raise DatasetUnavailableError(
                unavailable_message(str(self.config.task), base, dataset, reason)
            ) from None

    def _fit_splits(self, source: str) -> None:
        """Local data may hold only the evaluated split: splits used for few-shot examples that it lacks
        are dropped (with a log line); a missing evaluated split is an error naming the file to add."""
        cfg = self.config
        have = set(self.dataset)
        evaluated = cfg.test_split or cfg.validation_split
        if evaluated not in have:
            raise DatasetUnavailableError(
                f"{cfg.task}: {source} has splits {sorted(have)} but not {evaluated!r}, the "
                f"split this task evaluates; add {evaluated}.jsonl (or save that split)"
            )
        for attr in ("training_split", "validation_split", "fewshot_split"):
            split = getattr(cfg, attr)
            if split is not None and split != evaluated and split not in have:
                logger.info("%s: %s has no %r split; %s not used", cfg.task, source, split, attr)
                setattr(cfg, attr, None)
