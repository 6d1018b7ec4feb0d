"""lm-eval's own output writes, checked: a samples or results file it could not write fails the run.

Why: lm-eval 0.4.13 catches any error while writing ``samples_<task>_<date>.jsonl`` or ``results_<date>.json``
(a full disk, a file-size limit), logs "Could not save sample results" and exits 0; the samples file stops
part-way and a later `lm-interp compare` would read a shorter evaluation as if it were whole.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

#: lm-eval's logger of `EvaluationTracker` (its warnings are the only trace of a failed write).
TRACKER_LOGGER = "lm_eval.loggers.evaluation_tracker"
_FAILED = ("Could not save sample results", "Could not save results aggregated")


class OutputWriteError(OSError):
    """lm-eval could not write its samples or results file; the evaluation's files are incomplete."""


class _Watcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.failed: list[str] = []  # lm-eval's warnings, each with the error it logs next (when it does)
        self._expect_error = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(message.startswith(text) for text in _FAILED):
            self.failed.append(message)
            self._expect_error = True
        elif self._expect_error:
            self._expect_error = False
            self.failed[-1] += f" ({message})"


@contextlib.contextmanager
def failed_writes_raise(output_path: str | None) -> Iterator[None]:
    """Raise `OutputWriteError` after the block when lm-eval logged a failed samples or results write.

    lm-eval logs the error itself at INFO right after its warning; the watcher lowers its logger's level for
    the block so that the error reaches the message whatever ``--verbosity`` says (only this handler and
    lm-eval's own handlers, which keep their levels, see it).
    """
    logger = logging.getLogger(TRACKER_LOGGER)
    watcher = _Watcher()
    level = logger.level
    logger.addHandler(watcher)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(level)
    if watcher.failed:
        where = f" under {output_path}" if output_path else ""
        raise OutputWriteError(
            f"lm-eval could not write its output files{where}: {'; '.join(watcher.failed)}. The samples "
            "file of this evaluation is incomplete (lm-eval itself would exit 0); free space or raise the "
            "file-size limit, then rerun the same command: the interpretation records already written are "
            "reused"
        )
