"""The per-request interpretation record and its JSONL form.

One `InterpRecord` per interpreted request (a multiple-choice document has one per interpreted choice). The
harness appends records to ``interp_records_<task>.jsonl`` as it goes, so an interrupted run keeps what it
computed and a rerun resumes (see `RecordWriter` / `load_records`). Records are plain JSON: no pickle.

Shapes are named once here and used everywhere: ``prompt_len x target_len`` for attribution matrices,
``layers x heads`` for attention maps, ``layers x components`` for FFN concept activations.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RECORD_FILE_PREFIX = "interp_records_"
#: key of lm-eval's results ``config`` (from the model's ``get_model_info``) that holds the records folder
RECORDS_DIR_KEY = "interp_records_dir"
SCHEMA_VERSION = 1


@dataclass
class InterpRecord:
    """Everything the interpretation pass learned about one (prompt, target) request.

    Attributes:
        task: lm-eval task name.
        doc_id: the document's index in the task's evaluation split (lm-eval's ``doc_id``).
        doc_hash: lm-eval's ``doc_hash`` of the document (sha256 of its JSON); runs are joined on it.
        request_index: the request's ``idx`` inside the document (the choice index for multiple choice).
        request_type: ``"loglikelihood"`` or ``"generate_until"``.
        role: ``"gold"`` for the reference answer of a multiple-choice document, ``"generated"`` for a
            generation, ``"choice"`` for any other interpreted continuation.
        prompt_tokens: the prompt as the model saw it (BOS included where the tokenizer adds one).
        target_tokens: the target continuation, tokenised as the model scored it.
        token_parts: one part label per prompt token (``"instruction"``, ``"content"``, ``"fewshot"``,
            ``"template"``, ``"special"``, ...). ``instruction_mask`` is ``part == "instruction"``.
        raw: the raw attribution matrix I (prompt_len x target_len).
        quantised: S with the record's ``L`` and b = 0 (prompt_len x target_len), for heatmaps.
        params: the settings used (L, b, p, eps, objective, method, ...).
        metrics: the per-example scalars, with the same names as in lm-eval's samples.
        attention: optional per-layer/head arrays (``layers x heads``), e.g. ``instruction_attention``.
        ffn: optional per-layer FFN concept activations (``layers x components``) and concept shares.
        extras: optional method-specific data (ablation curves, integrated-gradients checks, ...).
        fingerprint: the model/run identity (model id, revision or weight hash, dtype, plugin version, ...).
        notes: human-readable remarks (e.g. "re-run in float32 after NaN").
    """

    task: str
    doc_id: int
    doc_hash: str
    request_index: int
    request_type: str
    role: str
    prompt_tokens: list[str]
    target_tokens: list[str]
    token_parts: list[str]
    raw: list[list[float]]
    quantised: list[list[int]]
    params: dict[str, Any]
    metrics: dict[str, float]
    attention: dict[str, Any] = field(default_factory=dict)
    ffn: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def instruction_mask(self) -> list[int]:
        return [int(p == "instruction") for p in self.token_parts]

    @property
    def key(self) -> tuple[str, str, int]:
        """The identity of the request across reruns: (task, doc_hash, request_index)."""
        return (self.task, self.doc_hash, self.request_index)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InterpRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in data
        ]
        if missing:
            raise ValueError(
                f"interpretation record lacks required fields {missing}; was it written by lm-interp?"
            )
        return cls(**{k: v for k, v in data.items() if k in names})


def record_path(directory: str | Path, task: str, rank: int = 0, world_size: int = 1) -> Path:
    """Where the records of `task` live inside `directory` (one file per rank under data parallel)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task)
    suffix = f"_rank{rank}" if world_size > 1 else ""
    return Path(directory) / f"{RECORD_FILE_PREFIX}{safe}{suffix}.jsonl"


def record_files(directory: str | Path, rank: int = 0, world_size: int = 1) -> list[Path]:
    """All record files in `directory` (every task, every rank), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"{RECORD_FILE_PREFIX}*.jsonl"))


class RecordWriter:
    """Appends records to one JSONL file per task, flushing each line, so nothing computed is lost."""

    def __init__(self, directory: str | Path, rank: int = 0, world_size: int = 1):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rank, self.world_size = rank, world_size
        self._handles: dict[str, Any] = {}

    def write(self, record: InterpRecord) -> None:
        handle = self._handles.get(record.task)
        if handle is None:
            path = record_path(self.directory, record.task, self.rank, self.world_size)
            handle = open(path, "a", encoding="utf-8")
            self._handles[record.task] = handle
        handle.write(json.dumps(record.to_dict(), ensure_ascii=False, allow_nan=False) + "\n")
        handle.flush()

    def flush(self) -> None:
        for handle in self._handles.values():
            handle.flush()

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_records(path: str | Path, strict: bool = False) -> list[InterpRecord]:
    """Read a records JSONL file.

    A truncated or corrupt line (a run killed mid-write) is skipped with a warning naming the file and line,
    unless `strict`, in which case it raises `ValueError`.
    """
    records = []
    path = Path(path)
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(InterpRecord.from_dict(json.loads(line)))
            except (json.JSONDecodeError, ValueError, TypeError) as err:
                if strict:
                    raise ValueError(f"{path}:{lineno}: corrupt interpretation record ({err})") from err
                logger.warning("%s:%d: skipping corrupt interpretation record (%s)", path, lineno, err)
    return records
