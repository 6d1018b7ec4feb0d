"""Standard benchmarks without the hub: `interp_` variants read a local copy of their dataset.

One way, for every variant: ``LM_INTERP_DATA_DIR=DIR`` (or ``metadata.interp.local_data: PATH`` in a variant
YAML) and a folder ``DIR/<stock task name>/`` (``DIR/arc_easy``, ``DIR/mmlu_anatomy``) that holds either a
Hugging Face ``datasets`` folder written by ``save_to_disk`` or one file per split (``test.jsonl``,
``validation.jsonl``, ``train.jsonl``; ``.json``, ``.parquet`` and ``.csv`` work too) with the stock dataset's
fields. A variant with no folder there uses the hub. `variants.save_local_copy` writes such a folder on a
machine that can reach the hub.

Without a local copy the variant loads from the hub as the stock task does; when the hub cannot be reached it
fails at once with one `DatasetUnavailableError` line that names the dataset and this way, instead of
retrying for half a minute and printing a long ``ConnectionError``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "LM_INTERP_DATA_DIR"
SPLIT_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_PROXY_ENVS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class DatasetUnavailableError(RuntimeError):
    """An `interp_` variant's dataset is neither local nor reachable on the hub."""


def local_data_path(base_task: str, interp_meta: Mapping[str, Any] | None = None) -> Path | None:
    """The local copy of `base_task`'s dataset: ``metadata.interp.local_data``, else
    ``$LM_INTERP_DATA_DIR/<base_task>`` when that folder exists; None otherwise (the hub is used).

    Raises:
        DatasetUnavailableError: ``local_data`` is given but is not a folder.
    """
    given = (interp_meta or {}).get("local_data")
    if given:
        path = Path(str(given)).expanduser()
        if not path.is_dir():
            raise DatasetUnavailableError(
                f"the local copy of {base_task}'s dataset is missing: metadata.interp.local_data points at "
                f"{path}, which is not a folder; put the dataset there (a save_to_disk folder or "
                "<split>.jsonl files) or remove the key"
            )
        return path
    env = os.environ.get(DATA_DIR_ENV)
    if env and (Path(env).expanduser() / base_task).is_dir():
        return Path(env).expanduser() / base_task
    return None


def load_local_dataset(path: Path) -> Any:
    """A ``datasets.DatasetDict`` from a `save_to_disk` folder or from one file per split.

    Raises:
        DatasetUnavailableError: the folder holds neither.
    """
    import datasets

    path = Path(path)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"test": loaded})
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SPLIT_SUFFIXES)
    if not files:
        raise DatasetUnavailableError(
            f"{path} holds no dataset: expected a datasets save_to_disk folder (dataset_dict.json) or one "
            f"file per split named like test.jsonl ({', '.join(SPLIT_SUFFIXES)})"
        )
    formats = {SPLIT_SUFFIXES[p.suffix] for p in files}
    if len(formats) > 1:
        raise DatasetUnavailableError(f"{path} mixes file formats {sorted(formats)}; use one per dataset")
    return datasets.load_dataset(formats.pop(), data_files={p.stem: str(p) for p in files})


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub's host accepts a connection (True when a proxy is configured, which this
    cannot test, or when the user chose offline mode, where `datasets` uses its cache)."""
    if any(os.environ.get(k) for k in _PROXY_ENVS + _OFFLINE_ENVS):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable_message(task: str, base_task: str, dataset: str, reason: str) -> str:
    """The one line that says which dataset could not be had and the way to run without the hub."""
    return (
        f"{task}: dataset {dataset} could not be loaded ({reason}); to run without the hub, put a copy in "
        f"${DATA_DIR_ENV}/{base_task}/ (a datasets save_to_disk folder or <split>.jsonl files with the same "
        f'fields; on a machine online: python -c "from lm_interp_plugin.harness.variants import '
        f"save_local_copy; save_local_copy('{base_task}', 'DIR')\") and set {DATA_DIR_ENV}=DIR"
    )


def dataset_status(base_task: str, interp_meta: Mapping[str, Any] | None, config: Mapping[str, Any]) -> str:
    """One line for `lm-interp validate`: where the variant's data would come from, and whether it can."""
    try:
        local = local_data_path(base_task, interp_meta)
    except DatasetUnavailableError as err:
        return f"data: MISSING ({err})"
    if local is not None:
        return f"data: local copy {local}"
    dataset = "/".join(str(x) for x in (config.get("dataset_path"), config.get("dataset_name")) if x)
    if hub_reachable():
        return f"data: {dataset} from the Hugging Face hub (reachable; not downloaded here)"
    return f"data: UNREACHABLE: {dataset} needs the hub, which cannot be reached; set {DATA_DIR_ENV} (README)"
