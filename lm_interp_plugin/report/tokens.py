"""Per-token importance density for showing an example, and readable token text."""

from __future__ import annotations

import numpy as np

from lm_interp_plugin.methods.importance import importance_density as _paper_density
from lm_interp_plugin.records import InterpRecord

_MARKERS = {"\u0120": " ", "\u2581": " ", "\u010a": "\u21b5", "\n": "\u21b5", "\t": "\u21e5"}

#: The paper's settings, used when a record does not say which it was scored with.
DEFAULT_B = 7
DEFAULT_P = 4.0


def display_token(token: str) -> str:
    """The token as a reader would see it: byte-level BPE space/newline markers turned into real glyphs."""
    return "".join(_MARKERS.get(c, c) for c in token)


def density_params(record: InterpRecord) -> tuple[int, float]:
    """(b, p) the record's scores were computed with (the paper's 7 and 4 when the record does not say)."""
    b = record.params.get("b", DEFAULT_B)
    p = record.params.get("p", DEFAULT_P)
    return int(b), float(p)


def importance_density(record: InterpRecord) -> np.ndarray:
    """a_m / max a_m per prompt token, exactly as the record's ``instruction_importance`` was computed.

    One implementation (`methods.importance.importance_density`) with the record's b and p: levels <= b of
    the quantised matrix S (prompt_len x target_len) are dropped first, so a token the score ignores is shown
    white. A record without a matrix gives zeros.
    """
    s = np.asarray(record.quantised, dtype=float)
    if s.ndim != 2 or s.size == 0 or s.shape[0] != len(record.prompt_tokens):
        return np.zeros(len(record.prompt_tokens))
    b, p = density_params(record)
    return _paper_density(s, b=b, p=p)
