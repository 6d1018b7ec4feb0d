"""Every script in examples/ runs on the shipped tiny pair and prints what its docstring promises."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str):
    """Import examples/<name>.py as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    tested = {"attribute_one_prompt", "simple_evaluate_pipeline", "leaderboard"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


@pytest.mark.slow  # 8 to 35 s on 2 shared cores (loading transformers and the model)
def test_attribute_one_prompt(tmp_path, capsys):
    result = load_example("attribute_one_prompt").main(["--out", str(tmp_path)])
    png = tmp_path / "heatmap.png"
    assert result["png"] == png and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["answer"] == "gold river cat"  # the shipped tuned model follows this instruction
    density = result["density"]
    assert density.max() == pytest.approx(1.0) and (density >= 0).all()
    assert np.isfinite(result["metrics"]["instruction_importance"])
    out = capsys.readouterr().out
    assert "answer: 'gold river cat'" in out and "instruction_importance = " in out
    assert out.count(" instruction ") >= 3  # one heatmap line per instruction token


@pytest.mark.slow
def test_simple_evaluate_pipeline(tmp_path, capsys):
    results = load_example("simple_evaluate_pipeline").main(["--out", str(tmp_path), "--limit", "4"])
    scores = results["results"]["interp_instruct_mc"]
    assert 0.0 <= scores["acc,none"] <= 1.0 and np.isfinite(scores["instruction_attention,none"])
    samples = results["samples"]["interp_instruct_mc"]
    assert len(samples) == 4
    # the paper's score is absent where it is undefined (every level at or under b: zero mass), else finite
    importance = [s["instruction_importance"] for s in samples if "instruction_importance" in s]
    assert ("instruction_importance,none" in scores) == bool(importance)
    assert all(np.isfinite(importance))
    assert list((tmp_path / "records").rglob("interp_records_interp_instruct_mc*.jsonl"))
    out = capsys.readouterr().out
    assert "instruction_importance" in out and out.count("doc ") == 4


@pytest.mark.slow
def test_leaderboard_of_three_runs(tmp_path, capsys):
    results = load_example("leaderboard").main(["--out", str(tmp_path), "--limit", "6"])
    assert [r["label"] for r in results["runs"]] == ["base", "half", "tuned"]
    for task in ("demo_instruct", "demo_instruct_mc"):
        assert set(results["tasks"][task]["leaderboard"]) == {"base", "half", "tuned"}
        others = {row["other"] for row in results["tasks"][task]["paired"]}
        assert others == {"half", "tuned"}  # both compared against the base, per example
    report = json.loads((tmp_path / "report" / "results.json").read_text())
    assert report["runs"] == results["runs"]
    assert (tmp_path / "report" / "report.html").is_file()
    out = capsys.readouterr().out
    assert sum(line.startswith("demo_instruct") for line in out.splitlines()) == 6
