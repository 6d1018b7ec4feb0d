"""Attribution methods, one module each; importing this package imports every module in it, and each
registers itself (`registry.METHODS`).

A new method: one module here with an `AttributionMethod` subclass decorated with `register_method`. It is
chosen by name (``interp_methods=gxi+<name>``).
"""

from __future__ import annotations

from ..registry import METHODS, AttributionMethod, MethodAttribution, import_all, register_method

import_all(__name__, __path__)

__all__ = ["METHODS", "AttributionMethod", "MethodAttribution", "register_method"]
