"""A report note: its text, and how loud it is.

Notes are strings everywhere (JSON, Markdown, HTML), so `Note` is a `str` with a `severity`; code decides on
the field (`is_warning`), never on the wording. A warning's text starts with ``WARNING:`` for readers of the
plain files, written once by `warning`.
"""

from __future__ import annotations

from typing import Literal

Severity = Literal["info", "warning"]
WARNING_PREFIX = "WARNING: "


class Note(str):
    """Text of a note, with its `severity` (``info`` or ``warning``)."""

    severity: Severity

    def __new__(cls, text: str, severity: Severity = "info") -> Note:
        note = super().__new__(cls, text)
        note.severity = severity
        return note

    @property
    def message(self) -> str:
        """The text without the ``WARNING:`` marker (for a CLI that says ``warning:`` itself)."""
        return self[len(WARNING_PREFIX) :] if self.severity == "warning" else str(self)


def warning(text: str) -> Note:
    """A note that makes a comparison suspect: shown as a warning in the report and by `lm-interp compare`."""
    return Note(WARNING_PREFIX + text, "warning")


def is_warning(note: str) -> bool:
    """True for a `warning` note; a plain string is an ordinary note."""
    return getattr(note, "severity", "info") == "warning"
