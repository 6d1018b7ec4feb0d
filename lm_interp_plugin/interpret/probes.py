"""The older probe shape: record something during the pass's primal forward, then turn it into metrics.

New per-example signals follow `registry.Signal` instead (the activations they need named from the capture
vocabulary, `compute(ctx)`); `ffn_probe.FFNProbe` keeps this shape for the benchmarks and tests that capture
FFN outputs outside a pass, and the pass's FFN signal uses its `metrics_from`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Probe(Protocol):
    """A per-example measurement taken during a forward (no extra forward)."""

    def capture(self) -> AbstractContextManager[None]:
        """A context manager that records, during the forward run inside it, what `metrics` needs."""
        ...

    def metrics(self, target_len: int) -> tuple[dict[str, float], dict[str, Any]]:
        """Scalars for lm-eval's samples and detail for the record, from the last capture."""
        ...
