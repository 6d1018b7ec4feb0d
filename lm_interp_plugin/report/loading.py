"""Read what lm-eval 0.4.13 and the plugin wrote into an ``--output_path``.

Layout (see ``lm_eval/loggers/evaluation_tracker.py``): ``<output_path>/<model_name_sanitized>/`` holds
``results_<date_id>.json`` and, with ``--log_samples``, ``samples_<task>_<date_id>.jsonl`` per task, where
``date_id`` is ``datetime.now().isoformat()`` with ``:`` replaced by ``-`` (so it sorts as text). The plugin
adds ``interp_records_<task>.jsonl`` in the same folder. A folder may hold several evaluations; per task the
newest samples file is used (or the evaluation the user names by its results or samples file) and a note says
so. Records are joined to that evaluation's samples by the full key (task, doc_hash, doc_id, request index,
the context and target hashes, and the interpretation values the samples carry); records of other evaluations
in the same folder (another prompt, model or setting, superseded by a rerun) are left out with a note, never
mixed in.

Records written elsewhere (``records_dir=...`` in ``--model_args``, or the default ``./lm_interp_records``
of the stock ``lm_eval`` CLI) are found through the results file, where interp-hf records their absolute
folder (``config.interp_records_dir``), or through a folder the user names (``compare --records``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_interp_plugin.metric_names import is_interp_metric
from lm_interp_plugin.records import RECORD_FILE_PREFIX, RECORDS_DIR_KEY, InterpRecord, load_records

from .errors import RunDirError

logger = logging.getLogger(__name__)

RESULTS_PREFIX = "results_"
SAMPLES_PREFIX = "samples_"
_ROLE_ORDER = {"gold": 0, "generated": 1, "choice": 2}


@dataclass
class DocSample:
    """One evaluated document of one run: its per-example metrics and the text needed to show it."""

    doc_hash: str
    doc_id: int
    metrics: dict[str, float]
    prompt: str = ""
    target: str = ""
    response: str = ""
    prompt_hash: str = ""  # lm-eval's sha256 of the context: records and other runs are checked against it
    continuations: dict[int, str] = field(default_factory=dict)  # request index -> sha256 of its target
    interp: dict[str, float] = field(default_factory=dict)  # the interpretation values the samples carry


@dataclass
class TaskRun:
    """One task of one run: samples keyed by pairing key, records keyed the same way."""

    task: str
    samples: dict[str, DocSample] = field(default_factory=dict)
    records: dict[str, list[InterpRecord]] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    samples_file: Path | None = None
    records_file: Path | None = None
    notes: list[str] = field(default_factory=list)
    candidates: list[InterpRecord] = field(default_factory=list)  # every valid record read, in file order
    truncated: bool = False  # the samples file holds fewer documents than the results file counts

    def primary_record(self, key: str) -> InterpRecord | None:
        """The record that stands for a document: the gold answer, else the generation, else the first."""
        recs = self.records.get(key)
        if not recs:
            return None
        return min(recs, key=lambda r: (_ROLE_ORDER.get(r.role, 3), r.request_index))


@dataclass
class Run:
    """One model's evaluation: a ``<output_path>/<model_name_sanitized>`` folder."""

    label: str
    path: Path
    model: str | None
    tasks: dict[str, TaskRun]
    notes: list[str] = field(default_factory=list)
    records_dirs: list[Path] = field(default_factory=list)


def _has_lm_eval_files(folder: Path) -> bool:
    return any(
        p.is_file() and p.name.startswith((RESULTS_PREFIX, SAMPLES_PREFIX, RECORD_FILE_PREFIX))
        for p in folder.iterdir()
    )


def discover_run_folders(path: Path) -> list[Path]:
    """The model subfolders in `path`: `path` itself if it holds lm-eval files, else its subfolders that do.

    Raises:
        RunDirError: `path` is missing or holds no lm-eval output at either level.
    """
    path = Path(path)
    if path.is_file():
        if _selected_file(path) is None:
            raise RunDirError(
                f"{path} is a file but not lm-eval output: pass a run folder (the --output_path of an "
                f"lm-eval run), a {RESULTS_PREFIX}<date>.json or a {SAMPLES_PREFIX}<task>_<date>.jsonl file"
            )
        return [path.parent]
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist; pass the --output_path of an lm-eval run")
    if _has_lm_eval_files(path):
        return [path]
    subs = sorted(p for p in path.iterdir() if p.is_dir() and _has_lm_eval_files(p))
    if not subs:
        raise RunDirError(
            f"run directory {path} holds no lm-eval output (results_*.json, samples_*.jsonl or "
            f"{RECORD_FILE_PREFIX}*.jsonl) in itself or its subfolders; pass the --output_path given to "
            "`lm-interp run` (with --log_samples)"
        )
    return subs


def _selected_file(path: Path) -> tuple[str, str | None] | None:
    """For a results or samples file given as a run: ``(date_id, task or None)``; None for other files."""
    name = path.name
    if name.startswith(RESULTS_PREFIX) and name.endswith(".json"):
        return _date_id(name), None
    if name.startswith(SAMPLES_PREFIX) and name.endswith(".jsonl"):
        return _date_id(name), _sample_task(name)
    return None


def _date_id(name: str) -> str:
    """The ``date_id`` suffix of an lm-eval file name (the text after the last underscore)."""
    stem = name.rsplit(".", 1)[0]
    return stem[stem.rfind("_") + 1 :]


def _sample_task(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    return stem[len(SAMPLES_PREFIX) : stem.rfind("_")]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def _metric_name(name: str, filter_key: str | None, n_filters: int) -> str:
    """``acc`` for the default filter, ``exact_match,strict-match`` when a task has several filters."""
    if n_filters <= 1 or filter_key in (None, "none"):
        return name
    return f"{name},{filter_key}"


def _first_text(value: Any) -> str:
    """The first string inside a nested list of lm-eval arguments or responses."""
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    if isinstance(value, dict):
        value = next(iter(value.values()), "")
        return _first_text(value)
    return "" if value is None else str(value)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _continuation_hashes(row: dict[str, Any]) -> dict[int, str]:
    """sha256 of each request's target text: the continuation of a loglikelihood request, the raw generation
    of a generate_until one."""
    args = row.get("arguments")
    out: dict[int, str] = {}
    if isinstance(args, dict):
        for name, value in args.items():
            if (
                name.startswith("gen_args_")
                and isinstance(value, dict)
                and isinstance(value.get("arg_1"), str)
            ):
                try:
                    out[int(name[len("gen_args_") :])] = _sha256(value["arg_1"])
                except ValueError:
                    continue
    resps = row.get("resps")
    if not out and isinstance(resps, list) and resps and isinstance(resps[0], list) and resps[0]:
        if isinstance(resps[0][0], str) and isinstance(args, dict):
            first = args.get("gen_args_0")
            if isinstance(first, dict) and isinstance(first.get("arg_1"), dict):  # generate_until
                out[0] = _sha256(resps[0][0])
    return out


def read_samples(path: Path) -> tuple[dict[str, DocSample], list[str]]:
    """Parse one ``samples_<task>_<date>.jsonl`` into documents keyed for pairing, plus notes.

    The key is the ``doc_hash``; identical documents (same hash) get ``#1``, ``#2`` ... in doc_id order so
    they still pair one to one. Metric values that are not finite numbers are dropped.
    """
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    seen_rows: set[tuple[Any, Any, Any]] = set()
    repeated = 0
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                cut = not line.endswith("\n")  # the last line, without its end: the write stopped there
                what = "the last line is cut off (the file is truncated)" if cut else "a corrupt samples line"
                notes.append(f"{path.name}:{lineno}: skipped {what} ({err.msg})")
                continue
            if not isinstance(row, dict):
                notes.append(f"{path.name}:{lineno}: skipped a samples line that is not a JSON object")
                continue
            ident = (row.get("doc_id"), row.get("doc_hash"), row.get("filter"))
            if ident in seen_rows:
                repeated += 1  # the same document and filter again: the file was appended to twice
                continue
            seen_rows.add(ident)
            rows.append(row)
    if repeated:
        notes.append(
            f"{path.name}: {repeated} lines repeat a document (same doc_id, doc_hash and filter) already "
            "read (the file was written twice?); the first of each is used"
        )
    filters = {row.get("filter") for row in rows}
    by_doc: dict[tuple[str, int], DocSample] = {}
    for row in rows:
        doc_hash, doc_id = row.get("doc_hash"), row.get("doc_id")
        if not isinstance(doc_hash, str) or not isinstance(doc_id, int):
            notes.append(
                f"{path.name}: skipped a sample without doc_hash/doc_id (not lm-eval >= 0.4 output?)"
            )
            continue
        sample = by_doc.get((doc_hash, doc_id))
        if sample is None:
            args = row.get("arguments")
            prompt = _first_text(args.get("gen_args_0") if isinstance(args, dict) else args)
            sample = DocSample(
                doc_hash,
                doc_id,
                {},
                prompt,
                str(row.get("target", "")),
                _first_text(row.get("filtered_resps", row.get("resps"))),
                prompt_hash=str(row.get("prompt_hash") or ""),
                continuations=_continuation_hashes(row),
            )
            by_doc[(doc_hash, doc_id)] = sample
        for name in row.get("metrics", []):
            value = _finite(row.get(name))
            if value is not None:
                sample.metrics[_metric_name(name, row.get("filter"), len(filters))] = value
                if is_interp_metric(name):
                    sample.interp[name] = value
    out: dict[str, DocSample] = {}
    seen: dict[str, int] = defaultdict(int)
    for (doc_hash, _), sample in sorted(by_doc.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        seen[doc_hash] += 1
        key = doc_hash if seen[doc_hash] == 1 else f"{doc_hash}#{seen[doc_hash]}"
        out[key] = sample
    if any(n > 1 for n in seen.values()):
        notes.append(
            f"{path.name}: {sum(n > 1 for n in seen.values())} documents occur more than once "
            "(identical content); they are paired in doc_id order"
        )
    return out, notes


@dataclass
class _Results:
    """What the results files of a folder say: per-task numbers, model, lm-eval model type, records folder."""

    reported: dict[str, dict[str, Any]]
    model: str | None
    notes: list[str]
    model_type: str | None = None
    records_dir: Path | None = None
    n_docs: dict[str, int] = field(default_factory=dict)  # per task: documents evaluated ("n-samples")


def _read_results(folder: Path, date_id: str | None = None) -> _Results:
    """Per task, lm-eval's aggregated numbers from the newest results file that has the task (or from the
    results file of evaluation `date_id`)."""
    reported: dict[str, dict[str, Any]] = {}
    model: str | None = None
    notes: list[str] = []
    model_type: str | None = None
    records_dir: Path | None = None
    n_docs: dict[str, int] = {}
    paths = sorted(folder.glob(f"{RESULTS_PREFIX}*.json"), key=lambda p: _date_id(p.name))
    if date_id is not None:
        paths = [p for p in paths if _date_id(p.name) == date_id]
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            notes.append(f"{path.name}: unreadable results file skipped ({err})")
            continue
        for task, values in (data.get("results") or {}).items():
            reported[task] = {k: v for k, v in values.items() if _finite(v) is not None}
        for task, count in (data.get("n-samples") or {}).items():
            effective = count.get("effective") if isinstance(count, dict) else None
            if isinstance(effective, int) and not isinstance(effective, bool):
                n_docs[task] = effective
        cfg = data.get("config") or {}
        model_args = cfg.get("model_args")
        if isinstance(model_args, dict):
            model = str(model_args.get("pretrained", model))
        elif isinstance(model_args, str):
            for part in model_args.split(","):
                if part.strip().startswith("pretrained="):
                    model = part.split("=", 1)[1].strip()
        model = model or data.get("model_name") or cfg.get("model")
        model_type = cfg.get("model") or model_type
        if isinstance(cfg.get(RECORDS_DIR_KEY), str):
            records_dir = Path(cfg[RECORDS_DIR_KEY])
    return _Results(reported, model, notes, model_type, records_dir, n_docs)


def _read_records(folder: Path, tasks: dict[str, TaskRun], notes: list[str]) -> None:
    """Attach every valid interpretation record to its task as a candidate; `_join_records` picks."""
    for path in sorted(folder.glob(f"{RECORD_FILE_PREFIX}*.jsonl")):
        with _capture_warnings() as captured:
            records = load_records(path)
        for message in captured:
            notes.append(f"{path.name}: {message}")
        for rec in records:
            task = tasks.setdefault(rec.task, TaskRun(rec.task))
            task.records_file = path
            task.candidates.append(rec)


class _capture_warnings:
    """Collect the warnings `load_records` logs (corrupt lines) so the report can show them."""

    def __enter__(self) -> list[str]:
        self.messages: list[str] = []
        messages = self.messages

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                messages.append(record.getMessage())

        self.handler = _Handler(level=logging.WARNING)
        self.logger = logging.getLogger("lm_interp_plugin.records")
        self.logger.addHandler(self.handler)
        return self.messages

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)


def load_run(folder: Path, label: str, selected: Path | None = None, records_dir: Path | None = None) -> Run:
    """Read one model subfolder into a `Run`: per task the newest samples file, or the evaluation of
    `selected` (a results file: its evaluation's tasks; a samples file: that task only). Records are read from
    the folder, from the records folder its results name, and from `records_dir` (``compare --records``).

    Records are read from the folder itself, from the records folder its results file names, and from
    `records_dir` when given.

    Raises:
        RunDirError: the folder has neither samples nor interpretation records, or `records_dir` is missing.
    """
    folder = Path(folder)
    date_id, only_task = _selected_file(selected) if selected is not None else (None, None)
    info = _read_results(folder, date_id)
    reported, model, notes = info.reported, info.model, info.notes
    tasks: dict[str, TaskRun] = {}
    by_task: dict[str, list[Path]] = defaultdict(list)
    for path in folder.glob(f"{SAMPLES_PREFIX}*.jsonl"):
        if date_id is not None and _date_id(path.name) != date_id:
            continue
        if only_task is not None and _sample_task(path.name) != only_task:
            continue
        by_task[_sample_task(path.name)].append(path)
    if selected is not None:
        notes.append(f"using the evaluation of {selected.name} only")
        if not by_task:
            raise RunDirError(
                f"{selected} names an evaluation without samples files in {folder}; run lm-eval with "
                "--log_samples"
            )
    for task, paths in sorted(by_task.items()):
        paths.sort(key=lambda p: _date_id(p.name))
        newest = paths[-1]
        task_run = TaskRun(task, samples_file=newest, reported=reported.get(task, {}))
        # `paths` holds this task's files only: a glob on `samples_<task>_*` would also count the files of a
        # task whose name extends this one (`demo_instruct_mc` for `demo_instruct`)
        others = len(paths) - 1
        if others > 0 and selected is None:
            task_run.notes.append(
                f"{others + 1} evaluations of {task} in {folder}; using the newest "
                f"({_date_id(newest.name)}); name a results_/samples_ file instead of the folder for another"
            )
        task_run.samples, sample_notes = read_samples(newest)
        task_run.notes.extend(sample_notes)
        truncated = _truncation_note(task, newest, task_run.samples, info.n_docs.get(task))
        if truncated:
            task_run.notes.append(truncated)
            task_run.truncated = True
        tasks[task] = task_run
    if records_dir is not None and not Path(records_dir).is_dir():
        raise RunDirError(
            f"--records {records_dir} is not a folder; pass the records_dir of the run {folder}"
        )
    searched = _records_folders(folder, info.records_dir, records_dir)
    candidates: dict[str, TaskRun] = {}
    for where in searched:
        _read_records(where, candidates, notes)
    for name, found in candidates.items():
        if name in tasks:
            tasks[name].candidates, tasks[name].records_file = found.candidates, found.records_file
        elif selected is None:
            tasks[name] = found
    for task_run in tasks.values():
        outside = _records_outside(task_run, folder, records_dir)
        if outside:
            task_run.notes.append(outside)
        _join_records(task_run)
        if task_run.samples_file is None:
            _fill_from_records(task_run)
            task_run.notes.append(
                f"no samples file for {task_run.task} in {folder}: metrics come from the "
                "interpretation records (run lm-eval with --log_samples for stock metrics)"
            )
        elif not task_run.records:
            task_run.notes.append(_no_records_note(task_run.task, folder, info, searched))
    if not tasks:
        raise RunDirError(
            f"{folder} has results but no per-example samples or interpretation records; rerun lm-eval with "
            "--log_samples (and --model interp-hf) so runs can be paired"
        )
    return Run(label, folder, model, tasks, notes, searched)


def _records_outside(task_run: TaskRun, folder: Path, given: Path | None) -> str | None:
    """Records read through the absolute records folder a results file names, outside the run folder: a
    copied run reads the original's records from there, which the report says."""
    path = task_run.records_file
    if path is None or (given is not None and path.resolve().is_relative_to(Path(given).resolve())):
        return None
    if path.resolve().is_relative_to(folder.resolve()):
        return None
    return (
        f"interpretation records of {task_run.task} read from {path.parent}, the records folder named in "
        f"the results file, outside the run folder {folder} (a copied or moved run reads the original's "
        "records there); pass `--records DIR` to read another copy"
    )


def _truncation_note(task: str, path: Path, samples: dict[str, DocSample], n_docs: int | None) -> str | None:
    """A samples file that holds fewer documents than its evaluation's results file counts was cut short
    (lm-eval 0.4.13 logs a failed samples write and exits 0): say so, with the counts."""
    if n_docs is None or len(samples) >= n_docs:
        return None
    return (
        f"{path.name} is truncated: it holds {len(samples)} of the {n_docs} documents its evaluation's "
        f"results file counts for {task} (the samples write stopped part-way: a full disk or a file-size "
        f"limit?); the statistics of {task} cover those {len(samples)} only: rerun the evaluation for all "
        "of them"
    )


def _records_folders(folder: Path, recorded: Path | None, given: Path | None) -> list[Path]:
    """The run folder, the records folder its results name (when it exists), the user's; each once."""
    out: list[Path] = []
    for where in (folder, recorded, given):
        if (
            where is not None
            and Path(where).is_dir()
            and Path(where).resolve() not in {p.resolve() for p in out}
        ):
            out.append(Path(where))
    return out


def _no_records_note(task: str, folder: Path, info: _Results, searched: list[Path]) -> str:
    """Why a task has no records, and the advice that fits how the run was made."""
    where = ", ".join(str(p) for p in searched)
    if info.model_type not in (None, "interp-hf"):
        return (
            f"no interpretation records for {task}: the run used --model {info.model_type}; heatmaps and "
            "attention maps are skipped (rerun with --model interp-hf for them)"
        )
    if info.records_dir is not None and not info.records_dir.is_dir():
        return (
            f"no interpretation records for {task}: the run wrote them to {info.records_dir}, which does not "
            "exist here (moved?); pass the folder with `lm-interp compare ... --records DIR`"
        )
    return (
        f"no interpretation records for {task} in {where}; if the run wrote them elsewhere (its "
        "records_dir), pass that folder with `lm-interp compare ... --records DIR`"
    )


def _matches_sample(rec: InterpRecord, sample: DocSample) -> bool:
    """The record interpreted the prompt and target this sample was scored on (when both say so)."""
    if rec.context_sha256 and sample.prompt_hash and rec.context_sha256 != sample.prompt_hash:
        return False
    target = sample.continuations.get(rec.request_index)
    return not (rec.continuation_sha256 and target and rec.continuation_sha256 != target)


def _same_values(rec: InterpRecord, sample: DocSample) -> bool:
    """The record's metrics are the interpretation values the sample carries (the record it was given)."""
    for name, value in sample.interp.items():
        stored = rec.metrics.get(name)
        if isinstance(stored, (int, float)) and not math.isclose(stored, value, rel_tol=1e-12, abs_tol=1e-12):
            return False
    return True


def _join_records(task_run: TaskRun) -> None:
    """Key the records like the samples (``doc_hash#k`` for repeated documents, matched on doc_id) and keep,
    per request, the newest record of the evaluation these samples come from.

    Without a samples file the newest record per request stands for it. With one, a record joins a sample
    only if doc_hash, doc_id, the context hash (lm-eval's ``prompt_hash``) and the target hash agree, and the
    document's primary record carries the values its sample reports; the rest (records of another
    evaluation: another prompt, model or setting, or a superseded rerun) are left out with a note.
    """
    newest_first = list(reversed(task_run.candidates))
    task_run.candidates = []
    if not task_run.samples:
        latest: dict[tuple[str, int, int], InterpRecord] = {}
        for rec in newest_first:
            latest.setdefault((rec.doc_hash, rec.doc_id, rec.request_index), rec)
        for rec in reversed(list(latest.values())):
            task_run.records.setdefault(rec.doc_hash, []).append(rec)
        return
    by_id = {(s.doc_hash, s.doc_id): key for key, s in task_run.samples.items()}
    per_doc: dict[str, dict[int, list[InterpRecord]]] = {}
    orphans = with_doc = 0
    for rec in newest_first:
        key = by_id.get((rec.doc_hash, rec.doc_id))
        if key is None:
            orphans += 1
            continue
        with_doc += 1
        if _matches_sample(rec, task_run.samples[key]):
            per_doc.setdefault(key, {}).setdefault(rec.request_index, []).append(rec)
    joined: dict[str, list[InterpRecord]] = {}
    for key, by_request in per_doc.items():
        sample = task_run.samples[key]
        chosen = {index: recs[0] for index, recs in by_request.items()}
        while chosen:
            primary = min(chosen.values(), key=lambda r: (_ROLE_ORDER.get(r.role, 3), r.request_index))
            if _same_values(primary, sample):
                joined[key] = sorted(chosen.values(), key=lambda r: r.request_index)
                break
            rest = by_request[primary.request_index]
            rest.pop(0)
            if rest:
                chosen[primary.request_index] = rest[0]
            else:
                chosen = {}
    stale = with_doc - sum(len(recs) for recs in joined.values())
    task_run.records = joined
    if orphans:
        used = task_run.samples_file.name if task_run.samples_file else "?"
        why = (
            "the documents whose samples lines were never written (the file is truncated), or records of "
            "another evaluation"
            if task_run.truncated
            else "records of another evaluation in the same folder"
        )
        task_run.notes.append(
            f"{orphans} interpretation records of {task_run.task} match no document of the samples file "
            f"used ({used}): {why}, left out"
        )
    if stale:
        task_run.notes.append(
            f"{stale} interpretation records of {task_run.task} belong to another evaluation of the same "
            "documents (another prompt, model or setting, or superseded by a rerun): left out, only the "
            "records of the evaluation used are joined"
        )


def _fill_from_records(task_run: TaskRun) -> None:
    """Without a samples file (no --log_samples), documents take their metrics from their primary record."""
    for key in task_run.records:
        if key in task_run.samples:
            continue
        rec = task_run.primary_record(key)
        metrics = {k: v for k, v in ((k, _finite(v)) for k, v in rec.metrics.items()) if v is not None}
        task_run.samples[key] = DocSample(
            rec.doc_hash, rec.doc_id, metrics, "".join(rec.prompt_tokens), "", "".join(rec.target_tokens)
        )


def resolve_runs(
    run_dirs: list[Path], labels: list[str] | None, records: list[Path] | None = None
) -> list[Run]:
    """Expand each given directory into its model subfolders and label every run.

    Args:
        run_dirs: lm-eval ``--output_path`` folders (or model subfolders).
        labels: one name per run found.
        records: one records folder per run found (each run's ``records_dir``), when they are elsewhere.

    Raises:
        RunDirError: a directory has no lm-eval output, or `labels`/`records` do not match the number of runs.
    """
    folders: list[tuple[Path, str]] = []
    selected: dict[int, Path] = {}
    for given in run_dirs:
        given = Path(given)
        found = discover_run_folders(given)
        if given.is_file():
            selected[len(folders)] = given
            folders.append((given.parent, given.parent.name))
            continue
        for folder in found:
            name = (
                given.name
                if len(found) == 1 and folder == given
                else (given.name if len(found) == 1 else f"{given.name}/{folder.name}")
            )
            folders.append((folder, name or str(given)))
    if labels is not None and len(labels) != len(folders):
        raise RunDirError(
            f"{len(labels)} labels given for {len(folders)} runs found in {[str(p) for p, _ in folders]}; "
            "pass one label per run (a folder with several model subfolders counts as several runs)"
        )
    if records is not None and len(records) != len(folders):
        raise RunDirError(
            f"{len(records)} --records folders given for {len(folders)} runs found in "
            f"{[str(p) for p, _ in folders]}; pass one records folder per run, in the same order"
        )
    names = list(labels) if labels is not None else [name for _, name in folders]
    seen: dict[str, int] = defaultdict(int)
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    extra = list(records) if records is not None else [None] * len(folders)
    return [
        load_run(folder, label, selected.get(i), extra[i])
        for i, ((folder, _), label) in enumerate(zip(folders, unique))
    ]
