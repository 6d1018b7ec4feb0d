"""`lm-interp compare`: read lm-eval output dirs, pair runs per task on doc_hash, write md/html/json
reports."""

from .compare import ComparisonResult, compare
from .errors import NoOverlapError, NoSharedTaskError, ReportInputError, RunDirError

__all__ = [
    "ComparisonResult",
    "NoOverlapError",
    "NoSharedTaskError",
    "ReportInputError",
    "RunDirError",
    "compare",
]
