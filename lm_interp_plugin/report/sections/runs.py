"""The runs compared: label, folder, model and tasks of each, and what the differences are taken against."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import render as R
from . import Block, Figures, ReportContext, Section, register_section


@dataclass
class RunInfo:
    label: str
    path: str
    model: str | None
    tasks: list[str]


@dataclass
class RunsData:
    baseline: str
    runs: list[RunInfo]

    def to_json(self) -> list[dict]:
        return [asdict(r) for r in self.runs]


@register_section
class RunsSection(Section[RunsData]):
    name, title, order = "runs", "", 10

    def analyse(self, ctx: ReportContext) -> RunsData:
        runs = [RunInfo(r.label, str(r.path), r.model, sorted(r.tasks)) for r in ctx.runs]
        return RunsData(ctx.baseline, runs)

    def blocks(self, data: RunsData, figures: Figures) -> list[Block]:
        return [
            R.Paragraph(
                f"Baseline: {data.baseline}. Differences are other run minus baseline, on examples joined by "
                "lm-eval's doc_hash; 95% CIs are percentile bootstrap (2000 resamples)."
            ),
            R.Table(
                ["run", "path", "model", "tasks"],
                [[r.label, r.path, r.model or "\u2013", ", ".join(r.tasks)] for r in data.runs],
                "Runs",
            ),
        ]
