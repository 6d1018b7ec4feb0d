"""What the pass asks of a probe: record something during its one primal forward, then turn it into metrics.

`run_pass` takes any object of this shape (the FFN concept probe today), so a new per-example signal needs no
change to the pass: capture it in the forward the attribution runs anyway.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Probe(Protocol):
    """A per-example measurement taken during the pass's primal forward (no extra forward)."""

    def capture(self) -> AbstractContextManager[None]:
        """A context manager that records, during the forward run inside it, what `metrics` needs."""
        ...

    def metrics(self, target_len: int) -> tuple[dict[str, float], dict[str, Any]]:
        """Scalars for lm-eval's samples and detail for the record, from the last capture."""
        ...
