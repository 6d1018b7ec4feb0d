"""Post-processing of attribution matrices into the paper's importance scores (Wu et al., NAACL 2024).

The attribution pass produces a raw matrix ``I`` (``prompt_len x target_len``): how much prompt token m
pushed target token n. Raw magnitudes are not comparable across targets or models, so the paper first
rescales every target column to its own maximum and quantises it to integer levels (``quantise``), drops the
weak levels (``sparsify``), and then asks, per prompt token, whether its influence is concentrated on a few
targets or spread over many (``importance_density``). The instruction-importance score of an example sums
that density over the instruction tokens (``instruction_importance``). With the released matrices these
functions reproduce the paper's Tables 1 and 2 to four decimals (see ``tests/methods/test_importance.py``).

Conventions that matter for exact reproduction:
    * quantisation: ``S = ceil(L * relu(I) / (max over the column of relu(I) + eps))``, computed in float64;
    * sparsification keeps entries strictly greater than ``b``;
    * density of a row is ``||S[m]||_1 / ||S[m]||_p`` (0 for a row that is all zero after sparsification),
      then divided by the largest density of the example (all zeros stay zeros);
    * an empty target (``target_len == 0``) scores 0, and the example still counts in group means;
    * Table 1's "outputs under 5 tokens dropped" means fewer than 5 target tokens (matrix columns) in the
      tuned model's response; a threshold of 4 or 6 does not reproduce the table.

Everything here is numpy only (no torch, no lm-eval).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

__all__ = [
    "ImportanceParams",
    "importance_density",
    "instruction_importance",
    "part_shares",
    "quantise",
    "sparsify",
]


@dataclass(frozen=True)
class ImportanceParams:
    """The knobs of the paper's post-processing, validated once.

    Attributes:
        L: number of quantisation levels (the paper uses 10).
        b: sparsification threshold: levels ``<= b`` are dropped (the paper's scores use 7; 0 keeps all,
            which is what a heatmap shows).
        p: the norm in the density's denominator, ``||.||_1 / ||.||_p`` (the paper uses 4; ``np.inf``
        allowed).
        eps: added to each column maximum so an all-zero column stays zero instead of dividing by zero.
    """

    L: int = 10
    b: int = 7
    p: float = 4.0
    eps: float = 1e-7

    def __post_init__(self) -> None:
        _check_L(self.L)
        _check_b(self.b, self.L)
        _check_p(self.p)
        _check_eps(self.eps)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, for a record's ``params``."""
        return asdict(self)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_L(L: Any) -> None:
    if not _is_int(L) or L < 1:
        raise ValueError(f"L (number of quantisation levels) must be an integer >= 1; got {L!r}.")


def _check_b(b: Any, L: int | None = None) -> None:
    if L is None:
        if not _is_int(b) or b < 0:
            raise ValueError(f"b (sparsification threshold) must be an integer >= 0; got {b!r}.")
    elif not _is_int(b) or not 0 <= b < L:
        raise ValueError(
            f"b (sparsification threshold) must be an integer with 0 <= b < L = {L}; got {b!r}. "
            f"With b >= L every entry would be dropped."
        )


def _check_p(p: Any) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not p > 1:
        raise ValueError(
            f"p (norm of the density's denominator) must be a number > 1 (np.inf allowed); got {p!r}."
        )


def _check_eps(eps: Any) -> None:
    ok = isinstance(eps, (int, float, np.integer, np.floating)) and not isinstance(eps, bool)
    if not ok or not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps (added to each column maximum) must be a finite number > 0; got {eps!r}.")


def _as_matrix(x: npt.ArrayLike, name: str) -> np.ndarray:
    """A 2-D finite float64 copy of ``x``, or a ValueError naming ``name``."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D matrix of shape (prompt_len, target_len); got {arr.ndim} dimension(s) "
            f"with shape {arr.shape}."
        )
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must hold numbers; got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} has {bad} non-finite value(s) (NaN or inf); recompute the attribution in float32 "
            f"or drop this example."
        )
    return arr


def _as_quantised(S: npt.ArrayLike) -> np.ndarray:
    arr = _as_matrix(S, "S")
    if arr.size and arr.min() < 0:
        raise ValueError(
            "S has negative entries, so it is not a quantised matrix; pass quantise(raw) rather than the raw "
            "attribution matrix."
        )
    return arr


def quantise(raw: np.ndarray, L: int = 10, eps: float = 1e-7) -> np.ndarray:
    """Rescale every target column to its own maximum and round up to ``L`` integer levels.

    Columns are normalised separately because gradient magnitudes differ by orders of magnitude between
    target tokens; after this step every target contributes on the same 0..L scale. This is the paper's
    matrix with b = 0 (nothing dropped yet), the form to draw as a heatmap.

    Args:
        raw: the raw attribution matrix I, ``prompt_len x target_len``, finite.
        L: number of levels (>= 1).
        eps: added to each column maximum (> 0); an all-zero or all-negative column stays all zero.

    Returns:
        An int64 matrix of the same shape with values in 0..L.

    Raises:
        ValueError: ``raw`` is not 2-D, holds NaN/inf, or ``L``/``eps`` are out of range.
    """
    _check_L(L)
    _check_eps(eps)
    arr = _as_matrix(raw, "raw")
    pos = np.maximum(arr, 0.0)
    col_max = pos.max(axis=0, keepdims=True) if arr.shape[0] else np.zeros((1, arr.shape[1]))
    return np.ceil(L * pos / (col_max + eps)).astype(np.int64)


def sparsify(S: np.ndarray, b: int = 7) -> np.ndarray:
    """Drop weak attributions: entries ``<= b`` become 0, the rest are kept as they are.

    Args:
        S: a quantised matrix (``prompt_len x target_len``, non-negative), e.g. from `quantise`.
        b: threshold (integer >= 0); the paper's scores use 7.

    Returns:
        A new matrix of the same shape and dtype as ``np.asarray(S)``.
    """
    _check_b(b)
    _as_quantised(S)  # validation only: the caller's dtype is kept
    out = np.array(S, copy=True)
    out[out <= b] = 0
    return out


def _row_density(S: np.ndarray, p: float) -> np.ndarray:
    """``||row||_1 / ||row||_p`` per row of a non-negative matrix, 0 for an all-zero row.

    Each row is divided by its maximum first: the ratio is scale-free, and the rescaling keeps ``x ** p``
    from overflowing for large entries.
    """
    prompt_len = S.shape[0]
    density = np.zeros(prompt_len, dtype=np.float64)
    if S.shape[1] == 0:
        return density
    row_max = S.max(axis=1)
    live = row_max > 0
    if not np.any(live):
        return density
    x = S[live] / row_max[live, None]
    l1 = x.sum(axis=1)
    lp = np.ones_like(l1) if np.isinf(p) else (x**p).sum(axis=1) ** (1.0 / p)
    density[live] = l1 / lp
    return density


def importance_density(S: np.ndarray, b: int = 7, p: float = 4) -> np.ndarray:
    """Per prompt token: how many target tokens it strongly influences, relative to the strongest token.

    ``||S[m]||_1 / ||S[m]||_p`` is large when prompt token m keeps a high level across many targets and
    close to 1 when its influence sits on one target; dividing by the maximum over prompt tokens puts every
    example on a 0..1 scale.

    Args:
        S: a quantised matrix (``prompt_len x target_len``), e.g. from `quantise` (b = 0).
        b: sparsification threshold applied first (see `sparsify`).
        p: the denominator's norm (> 1).

    Returns:
        A float64 vector of length ``prompt_len`` in [0, 1]; all zeros when nothing survives sparsification
        or the target is empty.
    """
    _check_b(b)
    _check_p(p)
    arr = _as_quantised(S)
    arr[arr <= b] = 0
    density = _row_density(arr, float(p))
    top = density.max() if density.size else 0.0
    return density / top if top > 0 else density


def _as_mask(instruction_mask: npt.ArrayLike, prompt_len: int) -> np.ndarray:
    mask = np.asarray(instruction_mask)
    if mask.ndim != 1:
        raise ValueError(f"instruction_mask must be 1-D (one flag per prompt token); got shape {mask.shape}.")
    if mask.size != prompt_len:
        raise ValueError(
            f"instruction_mask has length {mask.size} but S has prompt_len = {prompt_len} rows; build the "
            "mask "
            f"from the same tokenisation as the attribution matrix."
        )
    if mask.size and not np.isin(mask, (0, 1)).all():
        raise ValueError("instruction_mask must hold only 0/1 or False/True flags.")
    return mask.astype(bool)


def instruction_importance(
    S: np.ndarray, instruction_mask: Sequence[int] | Sequence[bool] | np.ndarray, b: int = 7, p: float = 4
) -> float:
    """The paper's instruction-importance score of one example.

    Sum of the normalised importance density over instruction tokens, divided by ``log2(2 + n)`` with n the
    number of instruction tokens, so that long instructions are not rewarded linearly for their length.

    Args:
        S: a quantised matrix (``prompt_len x target_len``), e.g. from `quantise` (b = 0).
        instruction_mask: one 0/1 flag per prompt token, 1 inside an instruction.
        b: sparsification threshold (the paper: 7).
        p: the density's norm (the paper: 4).

    Returns:
        The score (>= 0); 0.0 for an empty target or an empty instruction.

    Raises:
        ValueError: the mask length differs from ``prompt_len``, or S/b/p are invalid.
    """
    arr = _as_quantised(S)
    mask = _as_mask(instruction_mask, arr.shape[0])
    density = importance_density(arr, b=b, p=p)
    n_instruction = int(mask.sum())
    return float(density[mask].sum() / math.log2(2 + n_instruction))


def part_shares(S: np.ndarray, token_parts: list[str], b: int = 7, p: float = 4) -> dict[str, float]:
    """Share of the normalised density mass that falls on each prompt part.

    Used as ``attribution_share_<part>``: unlike `instruction_importance` it is a proportion, so it compares
    across prompts of different lengths and layouts.

    Args:
        S: a quantised matrix (``prompt_len x target_len``).
        token_parts: one part label per prompt token (``"instruction"``, ``"content"``, ...).
        b: sparsification threshold.
        p: the density's norm.

    Returns:
        ``{part: share}`` for every label present, in order of first appearance; the shares sum to 1 when any
        density survives, and are all 0.0 otherwise.
    """
    arr = _as_quantised(S)
    parts = list(token_parts)
    if len(parts) != arr.shape[0]:
        raise ValueError(
            f"token_parts has length {len(parts)} but S has prompt_len = {arr.shape[0]} rows; give one part "
            f"label per prompt token."
        )
    density = importance_density(arr, b=b, p=p)
    total = float(density.sum())
    labels = list(dict.fromkeys(parts))
    if total <= 0:
        return {label: 0.0 for label in labels}
    labels_arr = np.asarray(parts, dtype=object)
    return {label: float(density[labels_arr == label].sum() / total) for label in labels}
