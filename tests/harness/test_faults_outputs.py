"""Reliability rows of issue 24 about output files: lm-eval's failed samples write, and how `compare` names
truncated, cut or repeated samples files."""

from __future__ import annotations

import logging

import pytest


def _runs(tmp_path, n: int = 8):
    from fixtures_report import make_docs, scored, write_run

    return write_run(tmp_path / "tuned", "tuned", {"t": scored(make_docs(n, seed=0), 2)})


def _notes(tmp_path) -> str:
    """The notes `compare` gives the tuned run's task (its loader's; the report shows them)."""
    from lm_interp_plugin.report.loading import load_run

    (folder,) = (tmp_path / "tuned").iterdir()
    return " ".join(load_run(folder, "tuned").tasks["t"].notes)


def test_a_truncated_samples_file_is_called_truncated(tmp_path):
    """The samples write stopped after 5 of 8 lines (a full disk): compare says the file is truncated, with
    the counts from the results file, and the records of the missing documents are left out for that
    reason (not as records of another evaluation)."""
    tuned = _runs(tmp_path)
    (samples,) = tuned.glob("samples_t_*.jsonl")
    lines = samples.read_text(encoding="utf-8").splitlines(keepends=True)
    samples.write_text("".join(lines[:5]) + lines[5][:40], encoding="utf-8")  # a last line cut mid-way
    notes = _notes(tmp_path)
    assert f"{samples.name} is truncated: it holds 5 of the 8 documents" in notes, notes
    assert f"{samples.name}:6: skipped the last line is cut off (the file is truncated)" in notes, notes
    assert "samples lines were never written (the file is truncated)" in notes, notes
    assert "records of another evaluation in the same folder, left out" not in notes


def test_a_whole_samples_file_is_not_called_truncated(tmp_path):
    _runs(tmp_path)
    assert "truncated" not in _notes(tmp_path)


def test_repeated_samples_lines_are_named_as_repeats(tmp_path):
    """A samples file written twice over (the same lines again) is not "identical content" of different
    documents: the repeats are named and dropped."""
    tuned = _runs(tmp_path)
    (samples,) = tuned.glob("samples_t_*.jsonl")
    samples.write_text(samples.read_text(encoding="utf-8") * 2, encoding="utf-8")
    notes = _notes(tmp_path)
    assert "8 lines repeat a document (same doc_id, doc_hash and filter) already read" in notes, notes
    assert "identical content" not in notes


def test_a_failed_samples_write_fails_the_run(caplog):
    """lm-eval logs "Could not save sample results" (and the error) and returns normally; under the
    watcher the run fails naming the folder, the error and that the same command resumes."""
    from lm_interp_plugin.harness.outputs import TRACKER_LOGGER, OutputWriteError, failed_writes_raise

    tracker = logging.getLogger(TRACKER_LOGGER)
    with pytest.raises(OutputWriteError) as err:
        with failed_writes_raise("runs/x"):
            tracker.warning("Could not save sample results")
            tracker.info(repr(OSError(28, "No space left on device")))
    text = str(err.value)
    assert "under runs/x" in text and "No space left on device" in text, text
    assert "rerun the same command" in text
    with failed_writes_raise("runs/x"):  # nothing failed: nothing raised
        tracker.warning("something else")


def test_lm_interp_run_fails_when_lm_eval_could_not_write_its_samples(monkeypatch, capsys):
    """`lm-interp run` wires the watcher around lm-eval's CLI: the run exits 1 with one line."""
    import lm_eval.__main__

    from lm_interp_plugin.cli import main
    from lm_interp_plugin.harness.outputs import TRACKER_LOGGER

    def cli_evaluate():  # lm-eval's behaviour on a full disk: a warning, the error at INFO, exit 0
        logging.getLogger(TRACKER_LOGGER).warning("Could not save sample results")
        logging.getLogger(TRACKER_LOGGER).info("OSError(28, 'No space left on device')")

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", cli_evaluate)
    assert main(["run", "--model", "interp-hf", "--output_path", "runs/x", "--tasks", "interp_instruct"]) == 1
    # the user's line; a logging handler an earlier test of this worker left on its closed capture stream may
    # add "--- Logging error ---" noise around it, which is pytest's, not the CLI's
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lm-interp: error:")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("lm-interp: error: lm-eval could not write its output files under runs/x")
    assert "No space left on device" in lines[0]
