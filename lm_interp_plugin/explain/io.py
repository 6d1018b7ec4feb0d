"""The file form shared by explain-heads and explain-ffn: one header line, then one JSON line per item."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def read_header_jsonl(
    path: str | Path,
    command: str,
    item_type: str,
    parse: Callable[[dict[str, Any]], T],
    schema_version: int,
    header_kind: str | None = None,
) -> tuple[dict[str, Any], list[T]]:
    """Read `path` written by `lm-interp <command>`: its header and its items of `item_type`.

    Raises:
        FileNotFoundError: the file is missing (the message says how to write it).
        ValueError: no header first, an unknown line type, an empty file, or a newer schema version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; write it with `lm-interp {command} MODEL --out {path}`")
    header: dict[str, Any] | None = None
    items: list[T] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            data = json.loads(line)
            kind = data.get("type")
            if lineno == 1:
                if kind != "header" or (header_kind is not None and data.get("kind") != header_kind):
                    raise ValueError(f"{path} does not start with an {command} header line")
                header = data
            elif kind == item_type:
                items.append(parse(data))
            else:
                raise ValueError(f"{path}:{lineno}: unexpected line type {kind!r}")
    if header is None:
        raise ValueError(f"{path} is empty; it is not an {command} output")
    if header.get("schema_version", 0) > schema_version:
        raise ValueError(
            f"{path} has schema version {header['schema_version']}; upgrade lm-interp to read it"
        )
    return header, items
