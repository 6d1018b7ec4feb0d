"""The runs compared: label, folder, model and tasks of each, and what the differences are taken against."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import PurePath

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


def short_name(text: str | None, limit: int = 28) -> str:
    """A short label for a model or folder: a local path's last part (lm-eval's folder names built from a
    path, ``__work__runs__base``, their last part), a hub id as it is; cut to its end past `limit`."""
    if not text:
        return "\u2013"
    name = PurePath(text).name if text.startswith(("/", ".", "~")) else text
    if "__" in name.strip("_"):
        name = name.rstrip("_").rsplit("__", 1)[-1]
    return name if len(name) <= limit else "\u2026" + name[-(limit - 1) :]


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
                ["run", "model", "tasks", "folder"],
                [
                    [
                        r.label,
                        R.Expand(short_name(r.model), r.model) if r.model else "\u2013",
                        ", ".join(r.tasks),
                        R.Expand(short_name(r.path), r.path),
                    ]
                    for r in data.runs
                ],
                "Runs (click a model or folder for its full path)",
            ),
        ]
