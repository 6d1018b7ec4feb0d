"""`lm-interp demo` prints exactly the verdict block README.md shows (the shipped pair, every ordering with a
tie-break, so the block is the same on every machine)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRST = "lm-interp demo: does this tiny pair show the paper's findings?"
LAST = '  (the same table is in the report: "The paper'


def verdict_block(text: str) -> list[str]:
    """The lines from the demo's heading to its closing note, both included."""
    lines = text.splitlines()
    start = lines.index(FIRST)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(LAST))
    return lines[start : end + 1]


def readme_block() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"What it printed at the end.*?```text\n(.*?)```", readme, re.S)
    assert match, "README.md lost the demo's printed block (```text after 'What it printed at the end')"
    return verdict_block(match.group(1))


def test_readme_block_is_found():
    block = readme_block()
    assert block[0] == FIRST and len(block) > 5


@pytest.mark.slow  # the whole demo: two lm-eval runs, the global explanations, the report (30 to 60 s of CPU)
def test_demo_on_the_shipped_pair_prints_the_readme_block(tmp_path, capsys):
    """One whole demo run (the README's main job) checked for everything a user reads: the verdict block
    byte for byte, the shipped pair used as it is, the base-vs-tuned lines, and the report's results."""
    import json

    from lm_interp_plugin.demo.run import run_demo

    assert run_demo(out=tmp_path / "demo") == 0
    out = capsys.readouterr().out
    assert verdict_block(out) == readme_block()  # nothing normalised: the same block everywhere
    assert not (tmp_path / "demo" / "models").exists()  # nothing was trained
    assert "tuned exact match 94.4% / multiple choice 89.6%" in out  # the shipped pair's build numbers
    shipped = "(models: the pair shipped with lm-interp, recipe demo-pair-v2, seed 1, trained with 1 thread"
    assert shipped in out
    results = json.loads((tmp_path / "demo" / "report" / "results.json").read_text())
    assert {f["task"] for f in results["findings"]} == {"demo_instruct", "demo_instruct_mc"}
    # every item was run, so the verdicts are compared with the recipe's rebuilds (a --limit run's are not)
    assert any(line.endswith("rebuilds]") for line in out.splitlines())
    not_shown = [f for f in results["findings"] if f["verdict"] != "shows up"]
    assert sum(line.strip().startswith("why not ") for line in out.splitlines()) == len(not_shown)
    # issue 23: each run's reference is the other model; the flips and one line per new measurement
    lines = [line.strip() for line in out.splitlines()]
    assert "base vs tuned, item by item (each run's reference model is the other one):" in lines
    assert any(line.startswith("flips [demo_instruct_mc]: ") for line in lines)
    for measurement in ("reference_kl", "token_shift_shifted", "contrastive_margin"):
        assert any(line.startswith(f"[demo_instruct_mc] {measurement}: base ") for line in lines), measurement
    assert results["flips"] and results["corrected_tests"]["tests"]
