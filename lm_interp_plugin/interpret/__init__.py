"""One interpretation pass of one (prompt, target) request: settings, the registries, the pass, its builder.

Extension points (each one module, registered on import):
- an attribution method: `attributions/<name>.py`, an `AttributionMethod` with `register_method`;
- a per-example signal: `signals/<name>.py`, a `BaseSignal` with `register_signal` (and its metrics with
  `metric_names.register_metric`).
"""

from __future__ import annotations

from .attributions import METHODS
from .builder import InterpretationPass, build_pass
from .context import PassContext, PassResult, TokenRoles
from .registry import (
    AttributionMethod,
    BaseSignal,
    Detail,
    MethodAttribution,
    Signal,
    register_method,
    register_signal,
)
from .signals import SIGNALS

__all__ = [
    "METHODS",
    "SIGNALS",
    "AttributionMethod",
    "BaseSignal",
    "Detail",
    "InterpretationPass",
    "MethodAttribution",
    "PassContext",
    "PassResult",
    "Signal",
    "TokenRoles",
    "build_pass",
    "register_method",
    "register_signal",
]
