"""The report as a list of registered sections: one file per section, each registering itself.

A section computes its numbers once (`Section.analyse`, a dataclass or None when it has nothing to say
on these runs), turns them into blocks for report.md and report.html (`Section.blocks`, figures through
`Figures`) and into its part of results.json (`Section.to_json`, under the section's `name`). `compare()`
loops over `registered()` in `order`; a module dropped into this package is found and imported, so adding a
section is one file:

    @register_section
    class Flips(Section[FlipsData]):
        name, title, order = "flips", "Answers that flip", 45

        def analyse(self, ctx: ReportContext) -> FlipsData | None: ...
        def blocks(self, data: FlipsData, figures: Figures) -> list[Block]: ...

What every section may read is in `ReportContext`: the runs as loaded, the baseline and the declared pair, the
per-task analysis (`report.analysis`, computed once for all sections), the section inputs given to
`compare()` (``inputs``: files such as the explain-heads pair), and the output folder.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from .. import render as R
from ..analysis import TaskAnalysis
from ..errors import ReportInputError
from ..loading import Run

D = TypeVar("D")
#: A block of the report (`report.render`'s dataclasses: Heading, Table, Image, ...).
Block = Any


@dataclass
class ReportContext:
    """What every section may read; built once per `compare()` call."""

    runs: list[Run]
    baseline: str
    pair: dict[str, Any]
    tasks: list[TaskAnalysis]
    notes: list[str]
    fingerprint_warnings: list[str]
    out: Path
    #: how many of the most-moved examples per task get heatmaps
    examples: int = 3
    #: the inputs of sections that read more than the runs, by name (``heads``, ``ffn``: file lists)
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def by_label(self) -> dict[str, Run]:
        return {r.label: r for r in self.runs}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "x"


class Figures:
    """Names, writes and remembers the PNG files of one report (``figNN_<stem>.png`` in the output folder)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.files: list[str] = []

    def add(self, stem: str, png: bytes, caption: str) -> R.Image:
        """Write `png` beside the report and return its block; `caption` says what the figure shows."""
        name = f"fig{len(self.files) + 1:02d}_{_slug(stem)}.png"
        (self.out / name).write_bytes(png)
        self.files.append(name)
        return R.Image(name, png, caption)


class Section(ABC, Generic[D]):
    """One part of the report. Subclasses set `name` (its key in results.json), `title` (its heading; empty:
    none) and `order` (place on the page, ascending), and register with `register_section`."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    order: ClassVar[float]

    @abstractmethod
    def analyse(self, ctx: ReportContext) -> D | None:
        """The section's numbers on these runs; None when it has nothing to show (results.json gets null)."""

    @abstractmethod
    def blocks(self, data: D, figures: Figures) -> list[Block]:
        """The section's tables, figures and text for both report files (its heading is added by compare)."""

    def to_json(self, data: D) -> Any:
        """The section's entry in results.json (strict JSON is made by the caller): `data.to_json()` when the
        dataclass has one, else its fields."""
        if hasattr(data, "to_json"):
            return data.to_json()
        if is_dataclass(data) and not isinstance(data, type):
            return asdict(data)
        raise TypeError(
            f"section {self.name!r}: give {type(data).__name__} a to_json() or make it a dataclass"
        )


_REGISTRY: dict[str, Section[Any]] = {}
_LOADED = False


def register_section(cls: type[Section[Any]]) -> type[Section[Any]]:
    """Class decorator: add one instance of `cls` to the report (names are unique)."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(getattr(cls, "order", None), (int, float)):
        raise TypeError(f"section class {cls.__name__} needs a name and a numeric order")
    if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
        raise ValueError(
            f"two report sections are named {name!r} ({type(_REGISTRY[name]).__name__} and {cls.__name__}); "
            "rename one"
        )
    _REGISTRY[name] = cls()
    return cls


def _load_all() -> None:
    """Import every module of this package once, so each section file registers itself."""
    global _LOADED
    if _LOADED:
        return
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _LOADED = True


def registered() -> list[Section[Any]]:
    """Every section, in page order (then by name, so the order never depends on import order)."""
    _load_all()
    return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name))


def get_section(name: str) -> Section[Any]:
    """The registered section called `name`; the error lists the names there are."""
    _load_all()
    if name not in _REGISTRY:
        raise ReportInputError(f"no report section {name!r}; the sections are {sorted(_REGISTRY)}")
    return _REGISTRY[name]


__all__ = [
    "Block",
    "Figures",
    "ReportContext",
    "Section",
    "get_section",
    "register_section",
    "registered",
]
