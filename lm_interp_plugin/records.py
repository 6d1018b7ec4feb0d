"""The per-request interpretation record and its JSONL form.

One `InterpRecord` per interpreted request (a multiple-choice document has one per interpreted choice). The
harness appends records to ``interp_records_<task>.jsonl`` as it goes, so an interrupted run keeps what it
computed and a rerun resumes (see `RecordWriter` / `read_records`). Records are plain JSON (no pickle), one
line each, with a checksum; a line that is truncated, garbled, edited or out of range is reported, never
reused, and never crashes a reader.

Shapes are named once here and used everywhere: ``prompt_len x target_len`` for attribution matrices,
``layers x heads`` for attention maps, ``layers x components`` for FFN concept activations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .metric_names import metric_spec

logger = logging.getLogger(__name__)

RECORD_FILE_PREFIX = "interp_records_"

#: key of lm-eval's results ``config`` (from the model's ``get_model_info``) that holds the records folder
RECORDS_DIR_KEY = "interp_records_dir"
Role = Literal["gold", "choice", "generated"]  # which continuation of a request was interpreted
SCHEMA_VERSION = 2  # 2: input_hash, context_sha256, continuation_sha256 and a per-line checksum
CHECKSUM_KEY = "checksum"


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
        input_hash: hash of exactly what was interpreted: prompt and target token ids, the prompt parts and
            the role. A rerun reuses a record only if this and ``fingerprint["run_hash"]`` match.
        context_sha256: sha256 of the context string as lm-eval sent it (equals the samples' ``prompt_hash``).
        continuation_sha256: sha256 of the continuation (the choice text, or the generation).
    """

    task: str
    doc_id: int
    doc_hash: str
    request_index: int
    request_type: str
    role: Role
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
    input_hash: str = ""
    context_sha256: str = ""
    continuation_sha256: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def instruction_mask(self) -> list[int]:
        return [int(p == "instruction") for p in self.token_parts]

    @property
    def key(self) -> tuple[str, str, int]:
        """The request across reruns: (task, doc_hash, request_index); several records (stale ones from
        earlier configurations) may share it, `full_key` tells them apart."""
        return (self.task, self.doc_hash, self.request_index)

    @property
    def full_key(self) -> tuple[str, str, int, str, str]:
        """The computation: `key` plus the input hash and the run hash (model identity and settings)."""
        return (*self.key, self.input_hash, str(self.fingerprint.get("run_hash", "")))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_pass(
        cls,
        result: Any,
        *,
        request: dict[str, Any],
        prompt_tokens: list[str],
        target_tokens: list[str],
        token_parts: list[str],
        params: dict[str, Any],
        fingerprint: dict[str, Any],
        notes: list[str],
        store_matrices: bool = True,
    ) -> InterpRecord:
        """The record of one pass (`interpret.PassResult`: metrics, matrices, each signal's JSON form).

        Args:
            request: the request's identity fields (task, doc_id, doc_hash, request_index, request_type,
                role, input_hash, context_sha256, continuation_sha256).
            params: the settings that shaped the numbers (L, b, p, eps, objective); the pass's mode and
                primary method are added.
            notes: the request's notes before the pass's own (which follow).
            store_matrices: keep the raw and quantised matrices (they dominate the file size).
        """
        return cls(
            **request,
            prompt_tokens=prompt_tokens,
            target_tokens=target_tokens,
            token_parts=token_parts,
            raw=result.raw.tolist() if store_matrices else [],
            quantised=result.quantised.tolist() if store_matrices else [],
            params={**params, "mode": result.mode, "method": result.method},
            metrics=result.metrics,
            attention=result.attention,
            ffn=result.ffn,
            extras={"target_logprobs": result.target_logprobs.tolist(), **result.extras},
            fingerprint=dict(fingerprint),
            notes=notes + result.notes,
        )

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


# -- validation
# ------------------------------------------------------------------------------------------------
_STR_FIELDS = (
    "task",
    "doc_hash",
    "request_type",
    "role",
    "input_hash",
    "context_sha256",
    "continuation_sha256",
)
_DICT_FIELDS = ("params", "metrics", "attention", "ffn", "extras", "fingerprint")
_STR_LIST_FIELDS = ("prompt_tokens", "target_tokens", "token_parts", "notes")
_REQUEST_TYPES = ("loglikelihood", "generate_until")
_TOLERANCE = 1e-6


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _matrix_problem(name: str, value: Any, rows: int, cols: int, integer: bool) -> str | None:
    if value == []:
        return None  # interp_store_matrices=false
    if not isinstance(value, list) or len(value) != rows:
        return f"{name} is not a {rows} x {cols} matrix"
    for row in value:
        if not isinstance(row, list) or len(row) != cols:
            return f"{name} is not a {rows} x {cols} matrix"
        for x in row:
            if not (_is_int(x) if integer else _is_number(x)):
                return f"{name} holds {x!r}, not a finite {'integer' if integer else 'number'}"
    return None


def _range_problem(name: str, value: float, prompt_len: int) -> str | None:
    """The metric table's bounds (`metric_names.METRICS`), with the record's prompt length where the bound
    depends on it (instruction importance: densities <= 1 summed over instruction tokens / log2(2 + n))."""
    spec = metric_spec(name)
    if spec is None:
        return None
    low, high = spec.bounds
    if spec.bounded_by_prompt:
        high = prompt_len
    if (low is not None and value < low - _TOLERANCE) or (high is not None and value > high + _TOLERANCE):
        shown = f"[{_bound(low)}, {_bound(high)}]" if high is not None else f"[{_bound(low)}, inf)"
        return f"metric {name}={value!r} is outside {shown}"
    return None


def _bound(value: float | None) -> str:
    return "-inf" if value is None else f"{value:g}"


def validate_record(record: InterpRecord) -> list[str]:
    """What is wrong with a record read from disk (types, shapes, finite values in range); empty if nothing.

    A record that fails is not reused: its request is recomputed.
    """
    problems = []
    for name in _STR_FIELDS:
        if not isinstance(getattr(record, name), str):
            problems.append(f"{name} is not a string")
    if not record.task or not record.doc_hash:
        problems.append("task or doc_hash is empty")
    for name in ("doc_id", "request_index", "schema_version"):
        value = getattr(record, name)
        if not _is_int(value) or value < 0:
            problems.append(f"{name}={value!r} is not a non-negative integer")
    if record.request_type not in _REQUEST_TYPES:
        problems.append(f"request_type={record.request_type!r} is not one of {_REQUEST_TYPES}")
    for name in _DICT_FIELDS:
        if not isinstance(getattr(record, name), dict):
            problems.append(f"{name} is {type(getattr(record, name)).__name__}, not an object")
    for name in _STR_LIST_FIELDS:
        value = getattr(record, name)
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            problems.append(f"{name} is not a list of strings")
    if problems:
        return problems
    if len(record.token_parts) != len(record.prompt_tokens):
        problems.append(
            f"{len(record.token_parts)} token_parts for {len(record.prompt_tokens)} prompt_tokens"
        )
    shape = (len(record.prompt_tokens), len(record.target_tokens))
    for name, integer in (("raw", False), ("quantised", True)):
        problem = _matrix_problem(name, getattr(record, name), *shape, integer=integer)
        if problem:
            problems.append(problem)
    for name, value in record.metrics.items():
        if not isinstance(name, str) or not _is_number(value):
            problems.append(f"metric {name!r}={value!r} is not a finite number")
        else:
            problem = _range_problem(name, value, len(record.prompt_tokens))
            if problem:
                problems.append(problem)
    if record.quantised and "L" in record.params and _is_int(record.params["L"]):
        top = max((max(row) for row in record.quantised if row), default=0)
        if top > record.params["L"] or min((min(row) for row in record.quantised if row), default=0) < 0:
            problems.append(f"quantised values outside [0, L={record.params['L']}]")
    return problems


# -- one line per record
# ------------------------------------------------------------------------------------------------
def _body(data: dict[str, Any]) -> str:
    """The JSON text a record's checksum covers: keys in their stored order (the samples list metrics in the
    order the record holds them), compact. Parsing a line and dumping it again gives the same text."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _checksum(data: dict[str, Any]) -> str:
    return hashlib.sha256(_body(data).encode("utf-8")).hexdigest()[:16]


def record_line(record: InterpRecord) -> str:
    """The JSONL line of a record (newline included), ending with a checksum of its content: an edited or
    garbled value no longer matches it, and the record is recomputed instead of reused."""
    data = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}  # no deep copy
    body = _body(data)
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]
    return f'{body[:-1]},"{CHECKSUM_KEY}":"{digest}"}}\n'


class InvalidRecordError(ValueError):
    """A line of a records file that is not a valid record (truncated, garbled, edited, wrong types)."""

    def __init__(self, message: str, key: tuple[str, str, int] | None = None):
        super().__init__(message)
        self.key = key


def parse_record_line(line: str) -> InterpRecord:
    """One JSONL line -> a validated record.

    Raises:
        InvalidRecordError: the line is not JSON, lacks fields, fails its checksum or `validate_record`;
            ``.key`` is the request's key when the line was readable enough to tell it.
    """
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as err:
        raise InvalidRecordError(f"not JSON ({err.msg if hasattr(err, 'msg') else err})") from None
    if not isinstance(data, dict):
        raise InvalidRecordError("not a JSON object")
    key = None
    if isinstance(data.get("task"), str) and isinstance(data.get("doc_hash"), str):
        index = data.get("request_index")
        if _is_int(index):
            key = (data["task"], data["doc_hash"], index)
    stored = data.pop(CHECKSUM_KEY, None)
    version = data.get("schema_version", 1)
    if stored is None and version != 1:
        raise InvalidRecordError("no checksum", key)
    if stored is not None:
        try:
            actual = _checksum(data)
        except (TypeError, ValueError) as err:
            raise InvalidRecordError(f"unserialisable content ({err})", key) from None
        if actual != stored:
            raise InvalidRecordError("checksum mismatch: the record was edited or garbled", key)
    try:
        record = InterpRecord.from_dict(data)
    except (TypeError, ValueError) as err:
        raise InvalidRecordError(str(err), key) from None
    try:
        problems = validate_record(record)
    except Exception as err:  # a record of unexpected shape must never crash a run
        problems = [f"unreadable ({type(err).__name__}: {err})"]
    if problems:
        raise InvalidRecordError("; ".join(problems[:3]), key)
    return record


# -- files
# ------------------------------------------------------------------------------------------------
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


def repair_partial_line(path: str | Path) -> int:
    """Cut a partial last line (a write interrupted by a kill or a full disk) off `path`.

    Appending after such a line would glue the next record onto it and lose both. Returns the number of
    bytes removed (0 when the file ends with a newline or does not exist).
    """
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        end, block = size, 1 << 16
        keep = 0
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            chunk = handle.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    removed = size - keep
    logger.warning(
        "%s: removed a partial last line (%d bytes) left by an interrupted write; its request is recomputed",
        path,
        removed,
    )
    return removed


# fsync at most this often (seconds): flush() alone survives a killed process; fsync also survives a crash of
# the machine. Measured in benchmarks/RESULTS.md (section "Records: fsync cadence").
FSYNC_INTERVAL_S = 5.0


class RecordWriteError(OSError):
    """A record could not be written (a full disk, a file-size limit); the message names the file."""


def _lock(path: Path) -> Any | None:
    """An exclusive advisory lock beside `path` (``<file>.lock``), or None when another process holds it.

    The lock goes with the process (flock), so a killed run leaves no stale lock; where flock does not
    exist (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:
        return True
    handle = open(path.with_name(path.name + ".lock"), "a")  # held while writing, closed in close()
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


class RecordWriter:
    """Appends records to one JSONL file per task.

    Every line is flushed as it is written (a killed process loses nothing written), fsynced every
    `fsync_interval` seconds and on close (a machine crash loses at most that much), and written whole or not
    at all: a partial last line left by an earlier interrupted write is cut off before appending, and a write
    that fails midway (a full disk) is rolled back to the end of the previous line.
    """

    def __init__(
        self,
        directory: str | Path,
        rank: int = 0,
        world_size: int = 1,
        fsync_interval: float | None = FSYNC_INTERVAL_S,
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rank, self.world_size = rank, world_size
        self.fsync_interval = fsync_interval
        self._handles: dict[str, Any] = {}
        self._locks: list[Any] = []
        self._last_sync = time.monotonic()
        self.n_fsync = 0

    def _handle(self, task: str):
        handle = self._handles.get(task)
        if handle is None:
            path = record_path(self.directory, task, self.rank, self.world_size)
            lock = _lock(path)
            if lock is None:
                logger.warning(
                    "interp-hf: another process is writing %s (two runs into one records_dir?); nothing is "
                    "lost, but requests both runs interpret are computed, and stored, twice: run one at a "
                    "time per records_dir",
                    path,
                )
            elif lock is not True:
                self._locks.append(lock)
            repair_partial_line(path)
            handle = open(path, "ab")
            self._handles[task] = handle
        return handle

    def write(self, record: InterpRecord) -> None:
        data = record_line(record).encode("utf-8")
        handle = self._handle(record.task)
        start = handle.tell()
        try:
            handle.write(data)
            handle.flush()
        except BaseException as err:
            try:  # leave no partial line behind where the file system lets us (full disk, file-size limit)
                handle.truncate(start)
            except OSError:
                pass  # the next run's repair_partial_line cuts it
            if isinstance(err, OSError):
                raise RecordWriteError(
                    f"cannot write an interpretation record to {handle.name} ({err.strerror or err}); free "
                    "space (or raise the file-size limit) and rerun the same command: the records written "
                    "so far are reused"
                ) from err
            raise
        if self.fsync_interval is not None and time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()

    def sync(self) -> None:
        """Flush and fsync every open file."""
        for handle in self._handles.values():
            handle.flush()
            os.fsync(handle.fileno())
        self.n_fsync += 1
        self._last_sync = time.monotonic()

    def flush(self) -> None:
        for handle in self._handles.values():
            handle.flush()

    def close(self) -> None:
        if self._handles:
            self.sync()
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        for lock in self._locks:  # removed while still held: the folder keeps only the records
            with contextlib.suppress(OSError):
                os.unlink(lock.name)
            lock.close()
        self._locks.clear()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class LoadedRecords:
    """What a records file held: the valid records in file order, and the lines that were not."""

    records: list[InterpRecord]
    invalid: list[tuple[int, tuple[str, str, int] | None, str]]  # (line number, key if known, reason)


def read_records(path: str | Path) -> LoadedRecords:
    """Read a records JSONL file, validating each line; invalid lines are reported, never raised."""
    path = Path(path)
    records: list[InterpRecord] = []
    invalid: list[tuple[int, tuple[str, str, int] | None, str]] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                invalid.append((lineno, None, "partial last line (an interrupted write)"))
                continue
            try:
                records.append(parse_record_line(line))
            except InvalidRecordError as err:
                invalid.append((lineno, err.key, str(err)))
    return LoadedRecords(records, invalid)


def load_records(path: str | Path, strict: bool = False) -> list[InterpRecord]:
    """Read a records JSONL file: the valid records, in file order.

    A truncated, garbled or edited line (a run killed mid-write, a full disk, a hand edit) is skipped with a
    warning naming the file, line and reason, unless `strict`, in which case it raises `ValueError`.
    """
    loaded = read_records(path)
    for lineno, _, reason in loaded.invalid:
        if strict:
            raise ValueError(f"{path}:{lineno}: corrupt interpretation record ({reason})")
        logger.warning("%s:%d: skipping a corrupt interpretation record (%s)", path, lineno, reason)
    return loaded.records


class RecordStore:
    """The records of one run folder as a run uses them: what is stored per request, which stored record a
    request may reuse (resume), and the writer (closed after each batch).

    A stored record is reused only for the same computation: the same input hash (ids, parts, role) and the
    same run hash (model identity, the settings that change the numbers, the plugin version).
    """

    def __init__(
        self,
        directory: str | Path,
        rank: int = 0,
        world_size: int = 1,
        verify: Callable[[InterpRecord], str | None] | None = None,
    ) -> None:
        """`verify`: what is wrong with a well-formed stored record beyond its own lines (its metrics
        recomputed from its stored matrix, `harness.verify`), or None; such a record is not reused."""
        self.directory = Path(directory)
        self.rank, self.world_size = rank, world_size
        self.verify = verify
        self._done: dict[tuple[str, str, int], list[InterpRecord]] | None = None
        self._invalid: dict[tuple[str, str, int], str] = {}
        self._unreadable = 0  # invalid lines whose request cannot be told (not JSON): counted apart
        self._writer: RecordWriter | None = None

    def finished(self) -> dict[tuple[str, str, int], list[InterpRecord]]:
        """Every valid stored record, per request key, in file order (the last one is the newest)."""
        if self._done is None:
            self._done = {}
            for path in record_files(self.directory, rank=self.rank, world_size=self.world_size):
                loaded = read_records(path)
                for record in loaded.records:
                    wrong = self.verify(record) if self.verify is not None else None
                    if wrong:  # e.g. an edit that recomputed the checksum
                        logger.warning(
                            "interp-hf: %s: invalid interpretation record of doc %d, request %d (%s); its "
                            "request is recomputed",
                            path,
                            record.doc_id,
                            record.request_index,
                            wrong,
                        )
                        self._invalid[record.key] = wrong
                        continue
                    self._done.setdefault(record.key, []).append(record)
                for lineno, key, reason in loaded.invalid:
                    logger.warning(
                        "interp-hf: %s:%d: invalid interpretation record (%s); its request is recomputed",
                        path,
                        lineno,
                        reason,
                    )
                    if key is not None:
                        self._invalid[key] = reason
                    else:
                        self._unreadable += 1
        return self._done

    def reuse(
        self,
        key: tuple[str, str, int],
        input_hash: str,
        fingerprint: dict[str, Any],
        how_not_what: frozenset[str] = frozenset(),
    ) -> tuple[InterpRecord | None, str]:
        """The stored record this request may reuse, or None and why it is computed: ``"new"``, ``"invalid
        record"``, ``"unreadable record line"`` (as many as the files had lines that are not records) or
        what changed (`stale_reason`). A reused record that a record of another configuration
        follows in the file is appended again, so the newest record of a request is the one this run used."""
        stored = self.finished().setdefault(key, [])
        run_hash = fingerprint.get("run_hash")
        for record in reversed(stored):
            if record.input_hash == input_hash and record.fingerprint.get("run_hash") == run_hash:
                if record is not stored[-1]:
                    self.add(record)
                return record, "reused"
        if stored:
            same_input = [r for r in stored if r.input_hash == input_hash]
            return None, stale_reason((same_input or stored)[-1], input_hash, fingerprint, how_not_what)
        if key in self._invalid:
            return None, "invalid record"
        if self._unreadable > 0:  # as likely as not its record was on a line that could not be read
            self._unreadable -= 1
            return None, "unreadable record line"
        return None, "new"

    def add(self, record: InterpRecord) -> None:
        """Append a record to its task's file and to what is stored."""
        if self._writer is None:
            self._writer = RecordWriter(self.directory, rank=self.rank, world_size=self.world_size)
        self._writer.write(record)
        self.finished().setdefault(record.key, []).append(record)

    def close(self) -> None:
        """Sync and close the open files (a later `add` reopens them)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def stale_reason(
    newest: InterpRecord, input_hash: str, fingerprint: dict[str, Any], how_not_what: frozenset[str]
) -> str:
    """Why the newest stored record of a request does not match this computation."""
    if newest.input_hash != input_hash:
        return "prompt or target tokens changed" if newest.input_hash else "written by an older lm-interp"
    old, new = newest.fingerprint, fingerprint
    if old.get("model_hash") != new["model_hash"]:
        parts = ("weight_hash", "tokenizer_hash", "config_hash", "dtype")
        fields = [f for f in parts if old.get(f) != new.get(f)]
        return "model changed" + (f" ({', '.join(fields)})" if fields else "")
    if old.get("settings_hash") != new["settings_hash"]:
        before, after = old.get("settings") or {}, new["settings"]
        changed = sorted(
            k for k in set(before) | set(after) if k not in how_not_what and before.get(k) != after.get(k)
        )
        return "settings changed" + (f" ({', '.join('interp_' + k for k in changed)})" if changed else "")
    return "plugin version changed"
