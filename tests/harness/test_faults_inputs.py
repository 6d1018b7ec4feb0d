"""Reliability rows of issue 24 about bad inputs and interruptions: each fails in one line that names the
file (or folder) and the fix, before the model loads where it can."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROW = {"id": "a", "instruction": "Pick one.", "input": "x y", "choices": ["left", "right"], "label": 0}
YAML = """task: {name}
class: !function interp_task.InterpTask
dataset_path: json
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{instruction}}}}\\n\\nInput: {{{{input}}}}\\n\\nOutput:"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
metadata:
  interp:
    instruction_fields: [instruction]
    content_fields: [input]
    data_files: {{test: {data}}}
"""


def _task(folder: Path, rows: list[dict] | None = None, raw: bytes | None = None, name: str = "bad_data"):
    """A task folder with one multiple-choice task over `rows` (or the bytes `raw`)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_bytes(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows).encode())
    (folder / f"{name}.yaml").write_text(YAML.format(name=name, data=data), encoding="utf-8")
    shutil.copy(Path(__file__).resolve().parents[2] / "tasks" / "interp_task.py", folder)
    return folder


def _config(folder: Path, name: str = "bad_data") -> dict:
    import yaml

    from lm_interp_plugin.harness.launcher import _AnyTagLoader

    return yaml.load((folder / f"{name}.yaml").read_text(encoding="utf-8"), Loader=_AnyTagLoader)


@pytest.mark.parametrize(
    "rows, raw, message",
    [
        ([ROW, {**ROW, "choices": ["", "right"]}], None, r"bad_data.jsonl:2: choice 0 of 'choices' is empty"),
        ([ROW, {k: v for k, v in ROW.items() if k != "instruction"}], None, r":2 has no field 'instruction'"),
        (
            None,
            json.dumps(ROW).encode() + b'\n{"id": "b\xff"}\n',
            r"bad_data.jsonl is not valid UTF-8 \(line 2",
        ),
        (None, json.dumps(ROW).encode() + b"\n{not json\n", r"bad_data.jsonl:2 is not a JSON object"),
    ],
    ids=["empty-gold-choice", "no-instruction-field", "invalid-utf8", "not-json"],
)
def test_bad_task_data_is_named_by_file_and_line(tmp_path, rows, raw, message):
    """Before: "string index out of range", "UndefinedError: 'instruction' is undefined" after the model
    loaded, and a decoding error that named no file."""
    from lm_interp_plugin.harness.tasks import TaskDataError, check_local_data

    folder = _task(tmp_path / "tasks", rows, raw)
    with pytest.raises(TaskDataError, match=message):
        check_local_data(_config(folder))
    assert check_local_data(_config(_task(tmp_path / "good", [ROW]))) == {
        "test": tmp_path / "good" / "bad_data.jsonl"
    }


def test_lm_interp_run_checks_task_data_before_lm_eval_starts(tmp_path, monkeypatch, capsys):
    """`lm-interp run` fails on the data before lm-eval's CLI (which loads the model first) is called."""
    import lm_eval.__main__

    from lm_interp_plugin.cli import main

    folder = _task(tmp_path / "tasks", [{**ROW, "choices": ["left", " "]}])
    called = []
    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", lambda: called.append(1))
    argv = ["run", "--model", "interp-hf", "--tasks", "bad_data", "--include_path", str(folder)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert not called
    assert "bad_data.jsonl:1: choice 1 of 'choices' is empty" in err and err.count("\n") == 0, err


def test_ctrl_c_is_one_line_saying_how_to_resume(monkeypatch, capsys):
    """Before: a 102-line traceback. After: one line, exit status 130; the traceback under DEBUG."""
    from lm_interp_plugin import cli

    def interrupted(argv, debug):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_main", interrupted)
    assert cli.main(["run", "--tasks", "x"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("lm-interp: interrupted. Rerun the same command to resume")
    with pytest.raises(KeyboardInterrupt):
        cli.main(["run", "--tasks", "x", "--verbosity", "DEBUG"])


def test_compare_says_when_records_come_from_outside_the_run_folder(tmp_path):
    """A copied run whose results file names the original's absolute records folder: compare reads them
    there, and says so (before: silently)."""
    from lm_interp_plugin.records import RECORDS_DIR_KEY
    from lm_interp_plugin.report.loading import load_run

    from fixtures_report import make_docs, scored, write_run

    docs = make_docs(6, seed=0)
    original = write_run(tmp_path / "original", "tuned", {"t": scored(docs, 2)})
    copy = tmp_path / "copy" / original.name
    shutil.copytree(original, copy)
    for path in copy.glob("interp_records_*.jsonl"):
        path.unlink()
    (results,) = copy.glob("results_*.json")
    data = json.loads(results.read_text())
    data["config"][RECORDS_DIR_KEY] = str(original.resolve())
    results.write_text(json.dumps(data))
    run = load_run(copy, "tuned")
    notes = " ".join(run.tasks["t"].notes)
    assert f"read from {original.resolve()}, the records folder named in the results file" in notes, notes
    assert f"outside the run folder {copy}" in notes
    assert run.tasks["t"].records  # and they are used
    assert "outside the run folder" not in " ".join(load_run(original, "tuned").tasks["t"].notes)


def test_an_empty_first_choice_of_data_lm_eval_loads_is_named(tmp_path):
    """Data that lm-eval loads itself (no metadata.interp.data_files: a variant, a user's task): its own
    check of the first document fails with "string index out of range"; the task says what it means."""
    from lm_interp_plugin.harness.tasks import InterpTask, TaskDataError

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({**ROW, "choices": ["", "right"]}) + "\n", encoding="utf-8")
    config = {
        "task": "hub_like",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{instruction}}\n\nInput: {{input}}\n\nOutput:",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"interp": {"instruction_fields": ["instruction"]}},
    }
    with pytest.raises(
        TaskDataError, match=r"task hub_like: .*string index out of range.*empty answer choice"
    ):
        InterpTask(config=config)
