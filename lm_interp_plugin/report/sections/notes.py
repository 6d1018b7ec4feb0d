"""The notes of the whole comparison: fingerprint warnings (runs that differ in more than the model), then the
loading and pairing notes."""

from __future__ import annotations

from dataclasses import dataclass

from .. import render as R
from . import Block, Figures, ReportContext, Section, register_section


@dataclass
class NoteList:
    items: list[str]
    warning: bool = False

    def to_json(self) -> list[str]:
        return list(self.items)


@register_section
class FingerprintWarnings(Section[NoteList]):
    name, title, order = "fingerprint_warnings", "Fingerprint warnings", 30

    def analyse(self, ctx: ReportContext) -> NoteList:
        return NoteList(list(ctx.fingerprint_warnings), warning=True)

    def blocks(self, data: NoteList, figures: Figures) -> list[Block]:
        return [R.Notes(data.items, warning=True)] if data.items else []


@register_section
class Notes(Section[NoteList]):
    name, title, order = "notes", "Notes", 31

    def analyse(self, ctx: ReportContext) -> NoteList:
        return NoteList(list(ctx.notes))

    def blocks(self, data: NoteList, figures: Figures) -> list[Block]:
        return [R.Notes(data.items)] if data.items else []
