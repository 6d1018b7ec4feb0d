"""Per-example signals, one module each; importing this package imports every module in it, and each
registers itself (`registry.SIGNALS`).

A new signal: one module here with a `BaseSignal` subclass decorated with `register_signal` (its metrics
registered with `metric_names.register_metric` in the same module). The built-in signals have their own
switches; any other is turned on by name (``interp_signals=<name>``).
"""

from __future__ import annotations

from ..registry import SIGNALS, BaseSignal, Signal, import_all, register_signal

import_all(__name__, __path__)

__all__ = ["SIGNALS", "BaseSignal", "Signal", "register_signal"]
