"""Optional global sections of the report, from ``lm-interp explain-heads`` / ``explain-ffn`` output files.

Two files each (base, then tuned): heads give the instruction-verb analysis (Table 3 form), FFN files the
rotation and concept proportions (Table 5 form) with two figures. A file the user gave that cannot be read or
paired becomes a note in the report (the rest of the report is still written); a programming error is not
caught here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..explain.ffn import read_ffn_jsonl
from ..explain.ffn_compare import compare_ffn, format_table5, plot_concept_proportions, plot_rotation
from ..explain.heads import compare_heads, format_table3, read_heads_jsonl

logger = logging.getLogger(__name__)

# what reading or pairing user files raises when the files are wrong (missing, not JSONL, other schema, ...)
_INPUT_ERRORS = (OSError, ValueError, KeyError, json.JSONDecodeError)


@dataclass
class GlobalSection:
    """A titled block of preformatted text (a table from the explain modules), plus notes."""

    title: str
    text: str = ""
    notes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    definitions: list[tuple[str, str]] = field(default_factory=list)


#: What the numbers of the Table 3 form mean, shown beside it.
TABLE3_DEFINITIONS = [
    (
        "cell (%)",
        "share of the attention heads of the layer group in which a verb's count among the head's word pairs "
        "rises from base to tuned, averaged over the verbs of the row; 0-100%",
    ),
    ("layer groups", "first, middle and last third of the layers (0-based layer index range in parentheses)"),
    (
        "instruction verbs / general verbs",
        "the two verb lists of the paper (n = how many of each were found)",
    ),
    (
        "Welch t-test (t, p)",
        "per-verb shares of instruction verbs against general verbs; t > 0: instruction verbs rise in more "
        "heads (the paper's finding 2)",
    ),
]
#: What the numbers of the Table 5 form mean, shown beside it.
TABLE5_DEFINITIONS = [
    (
        "cell",
        "base% -> tuned%: the percentage of the layer group's FFN principal components whose top words the "
        "offline labeller assigns to the category, in the base and in the tuned model",
    ),
    ("n=base/tuned", "number of components labelled in the group (layers x components per layer)"),
    ("p", "two-sided two-proportion z-test of that category's share, base vs tuned"),
    ("chi-square p", "test of the whole group's distribution over categories, base vs tuned"),
    (
        "rotation figure",
        "principal angles (degrees, 0 = same subspace, 90 = orthogonal) between each layer's top-k FFN "
        "subspaces of base and tuned",
    ),
]


def _pair(section: GlobalSection, paths: list[Path]) -> list[Path] | None:
    if len(paths) < 2:
        section.notes.append(
            f"{section.title}: give two files (base, then tuned); got {[p.name for p in paths]}"
        )
        return None
    if len(paths) > 2:
        section.notes.append(f"only the first two files ({paths[0].name}, {paths[1].name}) are compared")
    return paths[:2]


def heads_section(paths: list[Path]) -> GlobalSection:
    """Table 3 form from two explain-heads files (base, tuned)."""
    section = GlobalSection(
        "Attention heads: instruction verbs (Table 3 form)", definitions=TABLE3_DEFINITIONS
    )
    pair = _pair(section, paths)
    if pair is None:
        return section
    try:
        section.text = format_table3(compare_heads(read_heads_jsonl(pair[0]), read_heads_jsonl(pair[1])))
    except _INPUT_ERRORS as err:
        section.notes.append(
            f"the heads files {[p.name for p in pair]} could not be compared ({type(err).__name__}: {err})"
        )
    return section


def ffn_section(paths: list[Path], out: Path) -> GlobalSection:
    """Table 5 form and the two FFN figures (written into `out`) from two explain-ffn files (base, tuned)."""
    section = GlobalSection("FFN concepts and rotation (Table 5 form)", definitions=TABLE5_DEFINITIONS)
    pair = _pair(section, paths)
    if pair is None:
        return section
    try:
        comparison = compare_ffn(read_ffn_jsonl(pair[0]), read_ffn_jsonl(pair[1]))
    except _INPUT_ERRORS as err:
        section.notes.append(
            f"the FFN files {[p.name for p in pair]} could not be compared ({type(err).__name__}: {err})"
        )
        return section
    section.text = format_table5(comparison)
    for plot, target in (
        (plot_concept_proportions, out / "ffn_concept_proportions.png"),
        (plot_rotation, out / "ffn_rotation.png"),
    ):
        section.images.append(Path(plot(comparison, target)).name)
    return section


def global_sections(heads: list[Path] | None, ffn: list[Path] | None, out: Path) -> list[GlobalSection]:
    """Sections for the given heads/ffn files (base first, then tuned); problems become the section's
    notes."""
    sections = []
    if heads:
        sections.append(heads_section([Path(p) for p in heads]))
    if ffn:
        sections.append(ffn_section([Path(p) for p in ffn], Path(out)))
    return sections
