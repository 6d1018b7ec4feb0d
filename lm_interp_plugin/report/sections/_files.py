"""Reading the user's file pairs (base, then tuned) of the global sections."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# what reading or pairing user files raises when the files are wrong (missing, not JSONL, other schema, ...)
INPUT_ERRORS = (OSError, ValueError, KeyError, json.JSONDecodeError)


def file_pair(title: str, paths: list[Path], notes: list[str]) -> list[Path] | None:
    """The first two of `paths` (base, tuned); what is wrong with them is added to `notes`."""
    if len(paths) < 2:
        notes.append(f"{title}: give two files (base, then tuned); got {[p.name for p in paths]}")
        return None
    if len(paths) > 2:
        notes.append(f"only the first two files ({paths[0].name}, {paths[1].name}) are compared")
    return paths[:2]


def compare_files(
    title: str,
    paths: list[Any],
    what: str,
    read: Callable[[Path], Any],
    combine: Callable[[Any, Any], T],
    notes: list[str],
) -> T | None:
    """`combine(read(base), read(tuned))` for the first two of `paths`; None, with the reason in `notes`, when
    they are not two files or cannot be read and combined."""
    pair = file_pair(title, [Path(p) for p in paths], notes)
    if pair is None:
        return None
    try:
        return combine(read(pair[0]), read(pair[1]))
    except INPUT_ERRORS as err:
        names = [p.name for p in pair]
        notes.append(f"the {what} files {names} could not be compared ({type(err).__name__}: {err})")
        return None
