"""interp-hf's ``interp_*`` model arguments as (name, default, meaning) rows, read off `InterpSettings`.

The dataclass is the one source: its fields give names and defaults, its docstring's ``Attributes:`` section
the meanings. `lm-interp run --help` prints these rows, and a test checks README's table against them.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

from .settings import InterpSettings

PREFIX = "interp_"


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{name: one-line meaning}`` from a Google-style ``Attributes:`` section."""
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    out: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        match = re.match(r"^    (\w+): (.*)$", line)
        if match:
            current = match.group(1)
            out[current] = match.group(2).strip()
        elif current and line.startswith("        "):
            out[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return out


def format_default(value: object) -> str:
    """A default as a user types it in ``--model_args``: true/false, none, 4 rather than 4.0."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_reference() -> list[tuple[str, str, str]]:
    """(``interp_<field>``, default, meaning) for every field of `InterpSettings`, in field order."""
    docs = _attribute_docs(InterpSettings)
    return [
        (PREFIX + f.name, format_default(f.default), docs.get(f.name, "").replace("``", ""))
        for f in dataclasses.fields(InterpSettings)
    ]
