"""The global view of finding 3: the paper's Table 5 form (FFN concept proportions per layer group, base ->
tuned) and two figures (Figure 3 form, subspace rotation) from two ``lm-interp explain-ffn`` files (base, then
tuned), given to `compare()` as ``ffn``. A file that cannot be read or paired becomes a note."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ...explain.ffn import LABEL_KINDS, read_ffn_jsonl
from ...explain.ffn_compare import FFNComparison, compare_ffn
from .. import render as R
from . import Block, Figures, ReportContext, Section, register_section
from ._files import compare_files

#: What the numbers of the Table 5 form mean, shown beside it.
DEFINITIONS = [
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


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def _p(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3g}"


def table5(cmp: FFNComparison, kind: str = "concept") -> R.Table | None:
    """The paper's Table 5 form: % of components per category, base -> tuned, per layer group, each cell with
    the two-proportion test's p-value; the last row is the chi-square test of the group's distribution. None
    when no layers were compared."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {LABEL_KINDS}")
    groups = [g for g in cmp.proportions if g.kind == kind]
    if not groups:
        return None
    headers = [kind] + [
        f"{g.group} layers {g.layers[0]}-{g.layers[-1]} (n={g.n_base}/{g.n_tuned})" for g in groups
    ]
    rows: list[list[Any]] = []
    for i, cat in enumerate(groups[0].categories):
        cells = [
            f"{_pct(g.base_shares()[i])} -> {_pct(g.tuned_shares()[i])} (p={_p(g.z_p[i])})" for g in groups
        ]
        rows.append([cat, *cells])
    rows.append(["chi-square p", *(_p(g.chi2_p) for g in groups)])
    caption = f"Share of FFN components per {kind}, base -> tuned, per layer group (Table 5 form)"
    return R.Table(headers, rows, caption)


@dataclass
class FFNGlobalData:
    files: list[str]
    comparison: FFNComparison | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        cmp = self.comparison.to_dict() if self.comparison else None
        return {"files": self.files, "notes": self.notes, "comparison": cmp}


@register_section
class FFNGlobal(Section[FFNGlobalData]):
    name, title, order = "ffn", "FFN concepts and rotation (Table 5 form)", 70

    def analyse(self, ctx: ReportContext) -> FFNGlobalData | None:
        paths = ctx.inputs.get("ffn")
        if not paths:
            return None
        data = FFNGlobalData([str(p) for p in paths])
        data.comparison = compare_files(self.title, paths, "FFN", read_ffn_jsonl, compare_ffn, data.notes)
        return data

    def blocks(self, data: FFNGlobalData, figures: Figures) -> list[Block]:
        from .. import plots

        blocks: list[Block] = []
        if data.notes:
            blocks.append(R.Notes(data.notes, warning=True))
        blocks.append(R.Definitions(DEFINITIONS))
        cmp = data.comparison
        if cmp is None:
            return blocks
        table = table5(cmp)
        none = R.Paragraph("No concept proportions: no layers compared.")
        blocks.append(table if table is not None else none)
        blocks.append(
            figures.add(
                "ffn_concept_proportions",
                plots.ffn_concept_proportions(cmp),
                "Share of FFN components per concept at each layer, base (grey, dashed) against tuned "
                "(blue): where the tuned model's FFN knowledge moved (Figure 3 form)",
            )
        )
        blocks.append(
            figures.add(
                "ffn_rotation",
                plots.ffn_rotation(cmp),
                "How far each layer's top-k FFN subspace turned from base to tuned: mean principal angle "
                "with its min-max range (0 degrees = same subspace, 90 = orthogonal)",
            )
        )
        return blocks
