"""The global view of finding 2: the paper's Table 3 form from two ``lm-interp explain-heads`` files (base,
then tuned), given to `compare()` as ``heads``. A file that cannot be read or paired becomes a note (the rest
of the report is still written); a programming error is not caught here."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ...explain.heads import compare_heads, read_heads_jsonl
from ...methods.verbs import LAYER_GROUPS, VerbAnalysis
from .. import render as R
from . import Block, Figures, ReportContext, Section, register_section
from ._files import compare_files

#: What the numbers of the Table 3 form mean, shown beside it.
DEFINITIONS = [
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


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


def table3(analysis: VerbAnalysis) -> R.Table:
    """The paper's Table 3 form: per layer group, the share of heads where verb counts rise, instruction
    verbs against general verbs, with the Welch test."""
    headers = ["verbs"]
    for name in LAYER_GROUPS:
        layers = analysis.groups[name]
        headers.append(f"{name} layers ({layers[0]}-{layers[-1]})" if layers else f"{name} layers (none)")
    rows: list[list[Any]] = [
        [f"instruction verbs (n={len(analysis.instruction_verbs)})"]
        + [_pct(analysis.instruction_mean[g]) for g in LAYER_GROUPS],
        [f"general verbs (n={len(analysis.general_verbs)})"]
        + [_pct(analysis.general_mean[g]) for g in LAYER_GROUPS],
        ["Welch t-test (t, p)"]
        + [
            "n/a"
            if math.isnan(analysis.t_stat[g])
            else f"t = {analysis.t_stat[g]:.2f}, p = {analysis.p_value[g]:.3g}"
            for g in LAYER_GROUPS
        ],
    ]
    return R.Table(headers, rows, "Instruction verbs against general verbs per layer group (Table 3 form)")


@dataclass
class HeadsData:
    files: list[str]
    analysis: VerbAnalysis | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "notes": self.notes,
            "analysis": asdict(self.analysis) if self.analysis else None,
        }


@register_section
class Heads(Section[HeadsData]):
    name, title, order = "heads", "Attention heads: instruction verbs (Table 3 form)", 60

    def analyse(self, ctx: ReportContext) -> HeadsData | None:
        paths = ctx.inputs.get("heads")
        if not paths:
            return None
        data = HeadsData([str(p) for p in paths])
        data.analysis = compare_files(self.title, paths, "heads", read_heads_jsonl, compare_heads, data.notes)
        return data

    def blocks(self, data: HeadsData, figures: Figures) -> list[Block]:
        blocks: list[Block] = []
        if data.notes:
            blocks.append(R.Notes(data.notes, warning=True))
        blocks.append(R.Definitions(DEFINITIONS))
        if data.analysis is not None:
            blocks.append(table3(data.analysis))
        return blocks
