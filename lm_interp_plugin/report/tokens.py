"""Per-token importance density for showing an example, and readable token text."""

from __future__ import annotations

import numpy as np

from lm_interp_plugin.records import InterpRecord

_MARKERS = {"\u0120": " ", "\u2581": " ", "\u010a": "\u21b5", "\n": "\u21b5", "\t": "\u21e5"}


def display_token(token: str) -> str:
    """The token as a reader would see it: byte-level BPE space/newline markers turned into real glyphs."""
    return "".join(_MARKERS.get(c, c) for c in token)


def importance_density(record: InterpRecord) -> np.ndarray:
    """a_m / max a_m per prompt token from the record's quantised matrix S (prompt_len x target_len).

    a_m = ||S[m, :]||_1 / ||S[m, :]||_p with the record's p (default 4); a row of zeros has density 0.
    """
    s = np.asarray(record.quantised, dtype=float)
    if s.ndim != 2 or s.size == 0:
        return np.zeros(len(record.prompt_tokens))
    p = float(record.params.get("p", 4))
    l1 = np.abs(s).sum(axis=1)
    lp = (np.abs(s) ** p).sum(axis=1) ** (1.0 / p)
    dens = np.divide(l1, lp, out=np.zeros_like(l1), where=lp > 0)
    top = dens.max()
    return dens / top if top > 0 else dens
