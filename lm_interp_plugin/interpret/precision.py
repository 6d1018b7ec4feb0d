"""Precision policy of the pass: how far a half-precision attribution is from float32."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..methods.importance import ImportanceParams, instruction_importance, quantise
from ..spans import instruction_mask


def float32_comparison(
    half: np.ndarray, full: np.ndarray, labels: Sequence[str], params: ImportanceParams, dtype: str
) -> dict[str, Any]:
    """How far a half-precision attribution is from float32: relative Frobenius error, largest entry error,
    and the instruction importance computed from each."""
    scale = float(np.linalg.norm(full)) or 1.0
    result: dict[str, Any] = {
        "dtype": dtype,
        "rel_error": float(np.linalg.norm(half - full)) / scale,
        "max_abs_error_rel": float(np.abs(half - full).max() / (np.abs(full).max() or 1.0))
        if full.size
        else 0.0,
    }
    mask = instruction_mask(labels)
    if mask.any() and full.size:
        result["instruction_importance"] = float(
            instruction_importance(quantise(half, L=params.L, eps=params.eps), mask, b=params.b, p=params.p)
        )
        result["instruction_importance_float32"] = float(
            instruction_importance(quantise(full, L=params.L, eps=params.eps), mask, b=params.b, p=params.p)
        )
    return result
