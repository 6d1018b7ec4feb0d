"""Exceptions of `lm-interp compare`: each names the offending input and the fix."""

from __future__ import annotations


class ReportInputError(ValueError):
    """The run directories given to `compare` cannot be read or do not pair up."""


class RunDirError(ReportInputError):
    """A run directory holds no usable lm-eval output."""


class NoSharedTaskError(ReportInputError):
    """Two runs evaluated disjoint sets of tasks, so nothing can be compared."""


class NoOverlapError(ReportInputError):
    """Two runs share tasks but not a single document (joined on lm-eval's ``doc_hash``)."""
