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
def test_demo_prints_the_readme_block(tmp_path, capsys):
    from lm_interp_plugin.demo.run import run_demo

    assert run_demo(out=tmp_path / "demo") == 0
    printed = verdict_block(capsys.readouterr().out)
    assert printed == readme_block()  # nothing normalised: the shipped pair gives the same block everywhere
