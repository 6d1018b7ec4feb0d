"""The README's main job, `lm-interp demo`, at a small recipe: real lm-eval runs, report files, findings."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
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
    assert f"(models: rebuilt in {tmp_path / 'demo' / 'models'}" in printed
    assert "instruction_importance" in printed
    assert sum(line.strip().startswith(("1. ", "2. ", "3. ")) for line in printed.splitlines()) == len(
        results["findings"]
    )


def test_demo_uses_the_shipped_pair_unless_asked_to_rebuild(tmp_path, monkeypatch):
    from lm_interp_plugin.demo import run
    from lm_interp_plugin.demo.build import DEFAULT_SEED

    calls = []
    monkeypatch.setattr(run, "shipped_pair", lambda: calls.append("shipped") or "pair")
    monkeypatch.setattr(run, "build_demo_pair", lambda cache, **kw: calls.append((cache, kw)) or "built")
    assert run.demo_pair(tmp_path) == "pair"
    assert run.demo_pair(tmp_path, rebuild=True) == "built"
    assert run.demo_pair(tmp_path, force=True, cache_dir=tmp_path / "c") == "built"  # --force alone rebuilds
    assert run.demo_pair(tmp_path, rebuild=True, seed=2, threads=1) == "built"
    assert calls[0] == "shipped"
    seed = DEFAULT_SEED  # the shipped pair's seed: a plain --rebuild trains that pair again
    assert calls[1] == (tmp_path / "models", {"force": False, "seed": seed, "recipe": None, "threads": None})
    assert calls[2] == (tmp_path / "c", {"force": True, "seed": seed, "recipe": None, "threads": None})
    assert calls[3][1]["seed"] == 2 and calls[3][1]["threads"] == 1


def test_cli_demo_flags(monkeypatch, tmp_path):
    from lm_interp_plugin import cli
    from lm_interp_plugin.demo import run

    seen = {}
    monkeypatch.setattr(run, "run_demo", lambda **kw: seen.update(kw) or 0)
    assert cli.main(["demo", "--out", str(tmp_path), "--force", "--seed", "3"]) == 0
    assert seen["force"] and seen["seed"] == 3 and not seen["rebuild"] and seen["out"] == tmp_path
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    assert not seen["force"] and not seen["rebuild"] and seen["seed"] is None and seen["threads"] is None


def _paired(metric, base, tuned, ci=None):
    from lm_interp_plugin.report.analysis import PairedComparison

    lo, hi = ci or (tuned - base - 0.01, tuned - base + 0.01)
    return PairedComparison("t", metric, "base", "tuned", 10, base, tuned, tuned - base, lo, hi, {}, {}, {})


def _finding(number, metric, verdict, diff, n=10, task="t"):
    from lm_interp_plugin.report.findings import FindingCheck

    return FindingCheck(number, "claim", task, metric, 1, "base", "tuned", n, 0.0, diff, diff, 0.01, verdict)


def _result(findings, tasks=()):
    """A comparison as `compare()` returns it, with only the findings and task analyses set."""
    from lm_interp_plugin.report import ComparisonResult
    from lm_interp_plugin.report.sections.findings import FindingsData
    from lm_interp_plugin.report.sections.tasks import TasksData, TaskView

    sections = {
        "findings": FindingsData(list(findings)),
        "tasks": TasksData("base", [TaskView(t) for t in tasks]),
    }
    return ComparisonResult("base", {}, sections)


def _record(doc_id, tokens, parts, quantised, role="gold"):
    from lm_interp_plugin.records import InterpRecord

    return InterpRecord(
        task="t",
        doc_id=doc_id,
        doc_hash=f"h{doc_id}",
        request_index=0,
        request_type="loglikelihood",
        role=role,
        prompt_tokens=tokens,
        target_tokens=["x", "y"],
        token_parts=parts,
        raw=[[0.0, 0.0]] * len(tokens),
        quantised=quantised,
        params={"L": 10, "b": 7},
        metrics={},
    )


def test_why_not_says_where_the_evidence_went(tmp_path):
    from lm_interp_plugin.demo.run import why_not
    from lm_interp_plugin.records import RecordWriter

    tokens, parts = (
        ["<s>", "Do", "it", "Output", ":"],
        ["special", "instruction", "instruction", "template", "template"],
    )
    runs = {}
    for label, top in (("base", 1), ("tuned", 4)):
        folder = tmp_path / label / "model"  # lm-eval's output_path/<model> layout
        folder.mkdir(parents=True)
        with RecordWriter(folder) as writer:
            for doc in range(3):
                q = [[0, 0]] * 5
                q[top] = [10, 10]  # strong on both answer tokens: the highest density
                q[2] = [9, 0] if doc == 0 else [0, 0]  # above b = 7 on one token only: lower density
                writer.write(_record(doc, tokens, parts, q))
            writer.write(
                _record(9, tokens, parts, [[0, 0]] * 4 + [[10, 10]], role="choice")
            )  # not the interpreted answer
        runs[label] = tmp_path / label
    from lm_interp_plugin.report.analysis import TaskAnalysis

    task = TaskAnalysis(
        "t",
        ["base", "tuned"],
        paired=[
            _paired("attribution_share_instruction", 0.5, 0.1),
            _paired("attribution_share_template", 0.4, 0.85),
            _paired("attribution_share_special", 0.1, 0.05),
            _paired("instruction_attention", 0.2, 0.19, ci=(-0.03, 0.01)),
            _paired("instruction_attention_lift", 1.5, 1.2),
        ],
        attention_means={"base": [[0.2, 0.4], [0.1, 0.1]], "tuned": [[0.3, 0.3], [0.0, 0.2]]},
    )
    findings = [
        _finding(1, "instruction_importance", "opposite", -0.3),
        _finding(2, "instruction_attention", "not significant", -0.01),
        _finding(3, "ffn_concept_other", "shows up", -0.1),
    ]
    lines = why_not(_result(findings, [task]), runs)
    assert len(lines) == 2  # finding 3 shows up: nothing to explain
    one, two = lines
    assert one.startswith("why not 1 [t]: share of the importance density per prompt part: ")
    # the largest move first
    assert "template 0.40 -> 0.85, instruction 0.50 -> 0.10, special 0.10 -> 0.05" in one
    assert "most often the top token: base 'Do' (instruction) in 3/3, tuned ':' (template) in 3/3" in one
    assert two.startswith("why not 2 [t]: the per-example difference is -0.010 on n=10, 95% CI")
    assert "[-0.03, 0.01] holds 0" in two and "1.50 -> 1.20" in two
    assert "per layer, first to last: base 0.30 0.10; tuned 0.30 0.10" in two


def test_rebuild_agreement_counts_same_verdicts(tmp_path):
    from lm_interp_plugin.demo.run import rebuild_agreement

    results = [_finding(1, "m", "opposite", -0.3), _finding(2, "m", "shows up", 0.1)]
    path = tmp_path / "robustness.json"
    assert rebuild_agreement(path, results) is None  # no file: nothing printed
    rebuilds = [
        {"name": "a", "verdicts": {"t/1": "opposite", "t/2": "not significant"}},
        {"name": "b", "verdicts": {"t/1": "opposite", "t/2": "shows up"}},
        {"name": "c", "verdicts": {"t/1": "shows up"}},
    ]
    path.write_text(json.dumps({"rebuilds": rebuilds, "verdict_p": "holm"}))
    assert rebuild_agreement(path, results) == [(2, 3), (1, 2)]
    rebuilds[0]["seed"] = 7  # the pair's own seed again: the same weights, not counted
    path.write_text(json.dumps({"rebuilds": rebuilds, "verdict_p": "holm"}))
    assert rebuild_agreement(path, results, skip_seed=7) == [(1, 2), (1, 1)]
    path.write_text(json.dumps({"rebuilds": rebuilds}))  # verdicts read on the uncorrected p: stale
    assert rebuild_agreement(path, results, skip_seed=7) is None
    path.write_text(json.dumps({"rebuilds": rebuilds, "verdict_p": "holm", "limit": 5}))
    assert rebuild_agreement(path, results, skip_seed=7) is None  # rebuilds on a subset: not compared
    path.write_text("{")
    assert rebuild_agreement(path, results) is None


def test_demo_runs_skip_lm_evals_own_task_index(tmp_path):
    from lm_eval.tasks import TaskManager

    from lm_interp_plugin.demo.run import write_demo_tasks
    from lm_interp_plugin.harness.launcher import plugin_tasks_visible

    (tmp_path / "a.jsonl").write_text("{}\n")
    tasks = write_demo_tasks(tmp_path / "tasks", tmp_path / "a.jsonl", tmp_path / "a.jsonl")
    original = TaskManager.__init__
    with plugin_tasks_visible(builtin_tasks=False):
        names = set(TaskManager(include_path=[str(tasks)]).all_tasks)
    assert {"demo_instruct", "demo_instruct_mc", "interp_instruct", "interp_instruct_mc"} <= names
    assert "arc_easy" not in names and len(names) < 100  # lm-eval's ~15,000 configs were not indexed
    assert TaskManager.__init__ is original  # restored: a plain TaskManager indexes everything again


def test_robustness_benchmark_summarises_finished_runs(tmp_path, capsys):
    """benchmarks/demo_robustness.py on finished configurations (no build): table, agreement, summary."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "demo_robustness.py"
    spec = importlib.util.spec_from_file_location("bench_demo_robustness", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def finished(name, seed, verdicts):
        folder = tmp_path / name
        (folder / "report").mkdir(parents=True)
        (folder / "report" / "results.json").write_text("{}")
        findings = [
            {"finding": i + 1, "task": "t", "metric": "m", "mean_baseline": 0.0, "mean_other": 0.0}
            | {"p_value": 0.01, "verdict": v}
            for i, v in enumerate(verdicts)
        ]
        build = {"seed": seed, "threads": 1, "seconds": {"total": 9.0}, "evaluation": None}
        meta = {"name": name, "args": [], "seconds": 1.0, "build": build, "findings": findings}
        (folder / "robustness_run.json").write_text(json.dumps(meta))

    finished("shipped", None, ["opposite", "shows up"])
    finished("seed4-threads1", 4, ["opposite", "shows up"])
    finished("seed0-threads1", 0, ["opposite", "not significant"])
    summary = tmp_path / "robustness.json"
    args = ["--out", str(tmp_path), "--seeds", "4", "0", "--threads", "1", "--summary", str(summary)]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "| seed4-threads1 | 9.0 | shipped | - + | True |" in out
    assert "| seed0-threads1 | 9.0 | shipped | - 0 | False |" in out
    written = json.loads(summary.read_text())
    assert [(r["seed"], r["verdicts"]) for r in written["rebuilds"]] == [
        (4, {"t/1": "opposite", "t/2": "shows up"}),
        (0, {"t/1": "opposite", "t/2": "not significant"}),
    ]


def test_recipe_sweep_summarises_finished_builds(tmp_path, capsys):
    """benchmarks/demo_recipe_sweep.py on finished builds (no training): table, agreement, and a summary that
    `lm-interp demo` reads (`rebuild_agreement`)."""
    import importlib.util
    from pathlib import Path

    from lm_interp_plugin.demo.run import rebuild_agreement

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "demo_recipe_sweep.py"
    spec = importlib.util.spec_from_file_location("bench_demo_recipe_sweep", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def finished(seed, verdicts):
        folder = tmp_path / "v" / f"seed{seed}"
        (folder / "report").mkdir(parents=True)
        (folder / "models" / "demo-x").mkdir(parents=True)
        findings = [
            {"finding": i + 1, "task": "t", "mean_baseline": 0.0, "mean_other": 1.0, "p_value": 0.01}
            | {"verdict": v}
            for i, v in enumerate(verdicts)
        ]
        (folder / "report" / "results.json").write_text(json.dumps({"findings": findings}))
        acc = {"exact_match": {"overall": 0.5}, "mc": {"overall": 0.75}}
        manifest = {"evaluation": {"base": acc, "tuned": acc}, "seconds": {"total": 9.0}}
        (folder / "models" / "demo-x" / "demo_manifest.json").write_text(json.dumps(manifest))

    finished(0, ["opposite", "shows up"])
    finished(1, ["opposite", "not significant"])
    summary = tmp_path / "robustness.json"
    args = ["--out", str(tmp_path), "--seeds", "0", "1", "--variant", "v={}", "--summary", str(summary)]
    assert bench.main([*args, "--machine", "here"]) == 0
    out = capsys.readouterr().out
    assert "| 0 | None | 50% / 75% | 50% / 75% | - + |" in out
    assert "t/1: - - all agree: True" in out and "t/2: + 0 all agree: False" in out
    written = json.loads(summary.read_text())
    assert written["machine"] == "here" and written["limit"] is None
    assert [(r["seed"], r["verdicts"]) for r in written["rebuilds"]] == [
        (0, {"t/1": "opposite", "t/2": "shows up"}),
        (1, {"t/1": "opposite", "t/2": "not significant"}),
    ]
    results = [_finding(1, "m", "opposite", -0.3), _finding(2, "m", "shows up", 0.1)]
    assert rebuild_agreement(summary, results, skip_seed=1) == [(1, 1), (1, 1)]
    assert rebuild_agreement(summary, results) == [(2, 2), (1, 2)]
    assert bench._cores("4-6,9") == ["4", "5", "6", "9"]
