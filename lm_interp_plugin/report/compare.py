"""`lm-interp compare`: a leaderboard-style base-vs-tuned report from lm-eval output directories.

Writes ``report.md``, ``report.html`` (self-contained) and ``results.json`` (strict JSON, null for undefined
numbers), plus every figure as a PNG next to them. The report is the registered sections
(`report.sections`) in order: each computes its numbers, its blocks and its key of results.json.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import render as R
from .analysis import TaskAnalysis, analyse
from .errors import ReportInputError
from .findings import FindingCheck, declared_pairs
from .loading import Run, resolve_runs
from .sections import Figures, ReportContext, registered

logger = logging.getLogger(__name__)

FORMAT = "lm-interp-compare/2"
#: results.json keys that are not sections (a section of one of these names is refused)
META_KEYS = ("format", "baseline", "conventions", "pair", "sections", "chosen_examples", "files")


@dataclass
class ComparisonResult:
    """What `compare` computed, section by section (typed), and where it wrote it; `to_dict` is the content of
    results.json: one key per section (its `to_json`, null when it had nothing to show) beside `META_KEYS`."""

    baseline: str
    pair: dict[str, Any]
    sections: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)

    def _items(self, name: str, attr: str) -> list[Any]:
        data = self.sections.get(name)
        return list(getattr(data, attr)) if data is not None else []

    @property
    def tasks(self) -> list[TaskAnalysis]:
        return [view.analysis for view in self._items("tasks", "tasks")]

    def task(self, name: str) -> TaskAnalysis:
        return next(t for t in self.tasks if t.task == name)

    @property
    def runs(self) -> list[dict[str, Any]]:
        data = self.sections.get("runs")
        return data.to_json() if data is not None else []

    @property
    def findings(self) -> list[FindingCheck]:
        return self._items("findings", "checks")

    @property
    def differences(self) -> list[FindingCheck]:
        return self._items("differences", "checks")

    @property
    def notes(self) -> list[str]:
        return self._items("notes", "items")

    @property
    def fingerprint_warnings(self) -> list[str]:
        return self._items("fingerprint_warnings", "items")

    @property
    def chosen_examples(self) -> dict[str, list[str]]:
        data = self.sections.get("tasks")
        return data.chosen_examples if data is not None else {}

    def to_dict(self) -> dict[str, Any]:
        by_name = {s.name: s for s in registered()}
        out: dict[str, Any] = {
            "format": FORMAT,
            "baseline": self.baseline,
            "conventions": "differences, paired tests and Welch tests are other run minus baseline "
            "(statistic sign: positive = other higher); CIs are 95% percentile bootstrap "
            "(2000 resamples, seed 0); examples are joined on lm-eval's doc_hash",
            "pair": self.pair,
            "sections": list(self.sections),
        }
        for name, data in self.sections.items():
            out[name] = None if data is None else by_name[name].to_json(data)
        out["chosen_examples"] = self.chosen_examples
        out["files"] = self.files
        return out


def strict_json(value: Any) -> Any:
    """A copy of `value` that `json.dumps(allow_nan=False)` accepts: NaN and infinities become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return strict_json(value.item())
    return value


def _pick_baseline(runs: list[Run], baseline: str | None) -> str:
    labels = [r.label for r in runs]
    if baseline is None:
        return labels[0]
    if baseline not in labels:
        raise ReportInputError(
            f"baseline {baseline!r} is not one of the run labels {labels}; "
            "pass one of them (or give labels= to name the runs)"
        )
    return baseline


def _pair_info(labels: list[str], pairs: list[tuple[str, str]] | None, baseline: str | None) -> dict:
    base, tuned = declared_pairs(labels, pairs, baseline)
    if base is None:
        return {}
    how = "declared with --pair" if pairs else "labelled base and tuned"
    return {"base": base, "tuned": tuned, "how": how}


def compare(
    run_dirs: list[Path],
    out: Path,
    labels: list[str] | None = None,
    heads: list[Path] | None = None,
    ffn: list[Path] | None = None,
    examples: int = 3,
    baseline: str | None = None,
    pairs: list[tuple[str, str]] | None = None,
    records: list[Path] | None = None,
    inputs: dict[str, Any] | None = None,
) -> ComparisonResult:
    """Compare lm-eval runs (base first) and write report.md, report.html, results.json and PNGs to `out`.

    Args:
        run_dirs: lm-eval ``--output_path`` folders or their model subfolders; a folder with several model
            subfolders contributes one run per subfolder.
        out: output folder (created).
        labels: one name per run found (default: folder names).
        heads: optional ``explain-heads`` JSONL files (base, tuned) for the global heads section.
        ffn: optional ``explain-ffn`` JSONL files (base, tuned) for the global FFN section.
        inputs: further section inputs by name (`ReportContext.inputs`), for sections that read files
            beside the runs.
        examples: how many of the most-moved examples per task get token heatmaps.
        baseline: label of the run the others are compared against (default: the first, or the base of
            `pairs`).
        pairs: (base, tuned) labels of runs that are a base model and its instruction-tuned version; the
            paper's findings are checked only for them (without `pairs`, for runs labelled base and tuned).
            Other runs get a neutral comparison.
        records: one records folder per run found, for records written outside the run folder whose
            results file does not name them (runs of older versions, moved folders).

    Raises:
        ReportInputError: (and subclasses) unreadable run dirs, runs with no task or document in common, a
            pair that names no run.
    """
    if not run_dirs:
        raise ReportInputError("no run directories given; pass at least one lm-eval --output_path")
    runs = resolve_runs([Path(p) for p in run_dirs], labels, [Path(p) for p in records] if records else None)
    pair = _pair_info([r.label for r in runs], pairs, baseline)
    base = _pick_baseline(runs, baseline if baseline is not None else pair.get("base"))
    tasks, notes, warnings = analyse(runs, base)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(
        runs,
        base,
        pair,
        tasks,
        notes,
        warnings,
        out,
        examples=examples,
        inputs={"heads": heads, "ffn": ffn, **(inputs or {})},
    )
    result = ComparisonResult(base, pair)
    figures = Figures(out)
    blocks: list[Any] = []
    for section in registered():
        if section.name in META_KEYS:
            raise ValueError(f"report section {section.name!r} would overwrite a results.json key; rename it")
        data = section.analyse(ctx)
        result.sections[section.name] = data
        body = section.blocks(data, figures) if data is not None else []
        if body and section.title:
            blocks.append(R.Heading(section.title))
        blocks += body
    title = "lm-interp comparison: " + " vs ".join(r.label for r in runs)
    result.files = {
        "markdown": "report.md",
        "html": "report.html",
        "json": "results.json",
        "figures": figures.files,
    }
    (out / "report.md").write_text(R.to_markdown(title, blocks), encoding="utf-8")
    (out / "report.html").write_text(R.to_html(title, blocks), encoding="utf-8")
    (out / "results.json").write_text(
        json.dumps(strict_json(result.to_dict()), indent=1, allow_nan=False, ensure_ascii=False),
        encoding="utf-8",
    )
    logger.info("comparison report written to %s", out)
    return result
