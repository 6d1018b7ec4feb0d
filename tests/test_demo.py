"""The README's main job, `lm-interp demo`, at a small recipe: real lm-eval runs, report files, findings."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_demo_writes_the_report(tmp_path, capsys):
    from lm_interp_plugin.demo.build import DemoRecipe
    from lm_interp_plugin.demo.run import run_demo

    assert run_demo(tmp_path / "demo", limit=4, recipe=DemoRecipe.small()) == 0
    report = tmp_path / "demo" / "report"
    for name in ("report.md", "report.html", "results.json"):
        assert (report / name).is_file()
    results = json.loads((report / "results.json").read_text())
    assert set(results["tasks"]) == {"demo_instruct", "demo_instruct_mc"}
    md = (report / "report.md").read_text()
    assert "instruction_importance" in md and "Table 3" in md or "verbs" in md
    assert "Paper findings check" in md  # the verdicts are in the report, not only on stdout
    assert {f["task"] for f in results["findings"]} == {"demo_instruct", "demo_instruct_mc"}
    printed = capsys.readouterr().out
    assert "does this tiny pair show the paper's findings" in printed
    assert "instruction following on held-out items" in printed and "tuned exact match" in printed
    assert "instruction_importance" in printed
    assert sum(line.strip().startswith(("1. ", "2. ", "3. ")) for line in printed.splitlines()) == len(
        results["findings"]
    )
