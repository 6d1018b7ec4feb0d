"""Validity of the FFN concept labels: is each concept's per-example share higher on its own items?

Two sources. The runs' records name the concepts they leave out and why (``ffn.concepts_absent``, written by
interp-hf when a concept is not valid on the model); explain-ffn files given as ``ffn`` carry the full
measurement when written with ``--validate`` (AUC and bootstrap interval per concept, `explain.ffn_validity`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...explain.ffn import read_ffn_jsonl
from ...explain.ffn_validity import MIN_AUC
from .. import render as R
from . import Block, Figures, ReportContext, Section, register_section

_DEFINITION = (
    f"A concept's share is reported per example only when it is valid on the model: on the shipped "
    f"interp_instruct items (teacher-forced on their references), its share is higher on its own category's "
    f"items than on the others with AUC >= {MIN_AUC:.2f} and a 95% bootstrap interval above 0.5. Labels "
    "come from the offline labeller after false-discovery control; a concept no component carries, or whose "
    "share does not tell its items apart, is absent from the records, and finding 3 is then not measurable."
)


@dataclass
class ValidityData:
    """Per run: concept -> reason it is absent (from the records); per explain-ffn file: its validity rows."""

    absent: dict[str, dict[str, str]] = field(default_factory=dict)
    measured: list[dict[str, Any]] = field(default_factory=list)
    #: per run: the concepts its records report (valid on its model, besides "other")
    reported: dict[str, list[str]] = field(default_factory=dict)


@register_section
class FFNValidity(Section[ValidityData]):
    """Which FFN concepts are valid on each model, with the evidence."""

    name, title, order = "ffn_validity", "FFN concept validity", 69

    def analyse(self, ctx: ReportContext) -> ValidityData | None:
        data = ValidityData()
        for task in ctx.tasks:
            for run, absent in task.ffn_concepts_absent.items():
                data.absent.setdefault(run, {}).update(absent)
            for run, shares in task.concept_shares.items():
                seen = data.reported.setdefault(run, [])
                seen.extend(c for c in shares if c != "other" and c not in seen)
        for path in ctx.inputs.get("ffn") or []:
            try:
                expl = read_ffn_jsonl(Path(path), load_components=False)
            except (OSError, ValueError, KeyError) as err:
                data.measured.append({"file": Path(path).name, "error": f"{type(err).__name__}: {err}"})
                continue
            if expl.validity is not None:
                data.measured.append({"file": Path(path).name, **expl.validity.to_dict()})
            else:
                data.measured.append({"file": Path(path).name, "error": "written without --validate"})
        return data if data.absent or data.measured or data.reported else None

    def blocks(self, data: ValidityData, figures: Figures) -> list[Block]:
        blocks: list[Block] = [R.Paragraph(_DEFINITION)]
        for entry in data.measured:
            if "error" in entry:
                blocks.append(R.Paragraph(f"{entry['file']}: no validity measured ({entry['error']})"))
                continue
            rows = []
            for c in entry["concepts"]:
                auc = "n/a" if c["auc"] is None else f"{c['auc']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"
                rows.append(
                    [
                        c["concept"],
                        c["n_components"],
                        "+".join(c["categories"]),
                        auc,
                        "valid" if c["valid"] else c["reason"],
                    ]
                )
            caption = f"{entry['file']}: labeller {entry['labeller'].get('name')}, {entry['items']}"
            blocks.append(
                R.Table(["concept", "components", "own items", "AUC [95% CI]", "verdict"], rows, caption)
            )
        for run, reported in sorted(data.reported.items()):
            if reported:
                blocks.append(R.Paragraph(f"{run}: per-example shares reported for {', '.join(reported)}."))
        for run, absent in sorted(data.absent.items()):
            rows = [[concept, reason] for concept, reason in absent.items()]
            blocks.append(
                R.Table(["concept", "why it is absent"], rows, f"{run}: concepts left out of the records")
            )
        return blocks
