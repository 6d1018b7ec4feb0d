"""Optional global sections of the report from ``lm-interp explain-heads`` / ``explain-ffn`` output files.

ADAPTER: `lm_interp_plugin.explain_heads` and `lm_interp_plugin.explain_ffn` are written in parallel with the
report. This module is the one place that calls them; they are imported lazily, only when the user passes
such files, and every call is checked so that a missing module or a different API gives a visible note in the
report instead of a crash. Functions used (two files, base then tuned): ``explain_heads.read_heads_jsonl(path)``,
``explain_heads.compare_heads(base, tuned)`` and ``explain_heads.format_table3(analysis)`` (checked against
the module); ``explain_ffn.read_ffn_jsonl(path)``, ``explain_ffn.compare_ffn(base, tuned)`` and
``explain_ffn.format_table5(comparison)`` (as announced; explain_ffn was not yet written when this was).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class GlobalSection:
    """A titled block of preformatted text (a table from the explain modules), plus notes."""

    title: str
    text: str = ""
    notes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


def _module(name: str) -> Any | None:
    try:
        return importlib.import_module(f"lm_interp_plugin.{name}")
    except ImportError as err:
        logger.warning("lm_interp_plugin.%s is not importable (%s)", name, err)
        return None


def _call(module: Any, name: str, *args: Any) -> tuple[Any, str | None]:
    fn = getattr(module, name, None)
    if not callable(fn):
        return None, f"lm_interp_plugin.{module.__name__.rsplit('.', 1)[-1]}.{name} is missing"
    try:
        return fn(*args), None
    except Exception as err:  # noqa: BLE001 - an API mismatch must not lose the rest of the report
        return None, f"{module.__name__}.{name} failed on the given files ({type(err).__name__}: {err})"


def _section(
    title: str,
    module_name: str,
    reader: str,
    combine: str,
    formatter: str,
    paths: list[Path],
    plotters: tuple[tuple[str, Path], ...] = (),
) -> GlobalSection:
    """Read two files, combine them (base, tuned), format the table, and draw `plotters` (name, target)."""
    section = GlobalSection(title)
    module = _module(module_name)
    if module is None:
        section.notes.append(
            f"lm_interp_plugin.{module_name} is not available; the files "
            f"{[p.name for p in paths]} were not analysed"
        )
        return section
    if len(paths) < 2:
        section.notes.append(f"{title}: give two files (base, then tuned); got {[p.name for p in paths]}")
        return section
    loaded = []
    for path in paths[:2]:
        data, problem = _call(module, reader, path)
        if problem:
            section.notes.append(problem)
            return section
        loaded.append(data)
    combined, problem = _call(module, combine, *loaded)
    if problem:
        section.notes.append(problem)
        return section
    text, problem = _call(module, formatter, combined)
    if problem:
        section.notes.append(problem)
        return section
    section.text = str(text)
    for name, target in plotters:
        written, problem = _call(module, name, combined, target)
        if problem:
            section.notes.append(problem)
        elif Path(written or target).is_file():
            section.images.append(Path(written or target).name)
    if len(paths) > 2:
        section.notes.append(f"only the first two files ({paths[0].name}, {paths[1].name}) are compared")
    return section


def global_sections(heads: list[Path] | None, ffn: list[Path] | None, out: Path) -> list[GlobalSection]:
    """Sections for the given heads/ffn files (base first, then tuned); problems become the section's notes.

    FFN figures (``explain_ffn.plot_concept_proportions`` / ``plot_rotation``) are written into `out`.
    """
    sections = []
    if heads:
        sections.append(
            _section(
                "Attention heads: instruction verbs (Table 3 form)",
                "explain_heads",
                "read_heads_jsonl",
                "compare_heads",
                "format_table3",
                [Path(p) for p in heads],
            )
        )
    if ffn:
        sections.append(
            _section(
                "FFN concepts and rotation (Table 5 form)",
                "explain_ffn",
                "read_ffn_jsonl",
                "compare_ffn",
                "format_table5",
                [Path(p) for p in ffn],
                (
                    ("plot_concept_proportions", Path(out) / "ffn_concept_proportions.png"),
                    ("plot_rotation", Path(out) / "ffn_rotation.png"),
                ),
            )
        )
    return sections
