"""The report reads right: token colours follow the score, one scale per metric family, every example
findable, empty rows folded, plain-text Markdown, the paper's findings only for a declared base/tuned pair."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from lm_interp_plugin.methods.importance import importance_density as paper_density
from lm_interp_plugin.methods.importance import instruction_importance
from lm_interp_plugin.records import InterpRecord
from lm_interp_plugin.report import ReportInputError, compare
from lm_interp_plugin.report.families import ATTENTION, LIFT, LOGPROB, SCORE, SHARES, STOCK, metric_family
from lm_interp_plugin.report.findings import declared_pairs
from lm_interp_plugin.report.tokens import importance_density

from fixtures_report import Doc, make_docs, scored, write_run


def _record(quantised: list[list[int]], params: dict) -> InterpRecord:
    n = len(quantised)
    return InterpRecord(
        task="t",
        doc_id=0,
        doc_hash="h",
        request_index=0,
        request_type="loglikelihood",
        role="gold",
        prompt_tokens=[f"w{i}" for i in range(n)],
        target_tokens=["a", "b", "c"],
        token_parts=["instruction"] * 2 + ["content"] * (n - 2),
        raw=[],
        quantised=quantised,
        params=params,
        metrics={},
    )


def test_token_density_is_the_scores_thresholded_density():
    """A token whose levels are all <= b contributes nothing to the score, so it is shown white (density 0);
    the unthresholded density the strips used before showed it at 1.0."""
    s = [[10, 9, 10], [6, 7, 5], [8, 8, 1], [0, 0, 0], [7, 7, 7]]
    rec = _record(s, {"L": 10, "b": 7, "p": 4})
    dens = importance_density(rec)
    np.testing.assert_array_equal(dens, paper_density(np.asarray(s), b=7, p=4))
    assert dens[1] == 0.0 and dens[4] == 0.0 and dens[3] == 0.0  # below or at the threshold
    assert dens[0] == pytest.approx(1.0) and 0 < dens[2] < 1
    # the strip's instruction densities give back the score itself
    mask = [1, 1, 0, 0, 0]
    assert dens[:2].sum() / np.log2(2 + 2) == pytest.approx(instruction_importance(np.asarray(s), mask, b=7))
    # a record scored with b = 0 is shown with b = 0, and a record without params with the paper's b = 7
    assert importance_density(_record(s, {"b": 0, "p": 4}))[4] > 0
    np.testing.assert_array_equal(importance_density(_record(s, {})), dens)


def test_metric_families_put_each_scale_on_its_own_axis():
    expected = {
        "acc": STOCK,
        "exact_match,strict-match": STOCK,
        "instruction_importance": SCORE,
        "ig_instruction_importance": SCORE,
        "attribution_share_template": SHARES,
        "ig_attribution_share_instruction": SHARES,
        "ffn_concept_math": SHARES,
        "instruction_attention": ATTENTION,
        "instruction_attention_lift": LIFT,
        "ablation_drop_removed": LOGPROB,
        "deletion_gain_gxi": LOGPROB,
    }
    assert {name: metric_family(name) for name in expected} == expected
    assert SHARES.limits == (0.0, 1.0) and LOGPROB.limits is None


def test_declared_pairs():
    assert declared_pairs(["base", "tuned"], None, None) == ("base", ["tuned"])
    assert declared_pairs(["a", "b"], None, None) == (None, [])
    assert declared_pairs(["base", "tuned"], None, "tuned") == (None, [])  # tuned as baseline: no claim
    assert declared_pairs(["a", "b", "c"], [("a", "b"), ("a", "c")], None) == ("a", ["b", "c"])
    with pytest.raises(ReportInputError, match="not run labels"):
        declared_pairs(["a", "b"], [("a", "x")], None)
    with pytest.raises(ReportInputError, match="several base runs"):
        declared_pairs(["a", "b", "c"], [("a", "b"), ("c", "b")], None)
    with pytest.raises(ReportInputError, match="differs from the base run"):
        declared_pairs(["a", "b"], [("a", "b")], "b")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("legible")
    docs = make_docs(24, seed=5)
    docs[3]["instruction"] = "[click](javascript:alert(1)) <b>bold</b> a -> b"
    base = [Doc(d.doc, 0.0, d.importance, d.attention, d.shares) for d in scored(docs, 1)]  # none correct
    write_run(root / "base", "org/base", {"t": base})
    write_run(root / "tuned", "org/tuned", {"t": scored(docs, 2, shift=0.6)}, seed=1)
    return root, docs


def test_unrelated_runs_get_a_neutral_comparison(runs, tmp_path):
    root, _ = runs
    result = compare([root / "base", root / "tuned"], tmp_path, labels=["model-a", "model-b"], examples=1)
    assert not result.findings and result.differences
    assert {d.verdict for d in result.differences} <= {
        "higher in the other run",
        "lower in the other run",
        "no significant difference",
        "untested",
    }
    md = (tmp_path / "report.md").read_text()
    assert "The paper's findings" not in md and "Differences on the paper's metrics" in md
    assert "instruction tuning" in md  # only to say it is not claimed
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["findings"] == [] and saved["differences"] and saved["pair"] == {}


def test_declared_pair_gets_the_findings(runs, tmp_path):
    root, _ = runs
    result = compare([root / "base", root / "tuned"], tmp_path, labels=["b", "t"], pairs=[("b", "t")])
    assert result.findings and not result.differences
    assert result.pair == {"base": "b", "tuned": ["t"], "how": "declared with --pair"}
    assert "The paper's findings on these runs" in (tmp_path / "report.md").read_text()


def test_every_example_is_findable_and_linked(runs, tmp_path):
    root, docs = runs
    compare([root / "base", root / "tuned"], tmp_path, labels=["base", "tuned"], examples=2)
    page = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    links = re.findall(r'<a href="#(ex-[^"]+)">', page)
    # one link per example in its task's table; the flips section links its flipped items to the same views
    assert len(set(links)) == len(docs) and len(links) >= len(docs)
    for anchor in set(links):  # each link has its token view, open (the 2 top ones) or folded
        assert f'id="{anchor}"' in page
    assert page.count('<details class="ex"') == len(docs) - 2
    assert 'class="sortable"' in page and 'type="search"' in page
    # the Markdown lists every example too (doc ids base/run), as plain text
    for i in range(len(docs)):
        assert re.search(rf"^\| {i}/{i} \|", md, re.MULTILINE), i
    # a legend says what the colours are, with the score's threshold
    assert "levels <= b = 0 dropped" in md and "white = 0" in md  # the fixture's records were scored with b=0


def test_empty_correctness_rows_are_folded(runs, tmp_path):
    root, _ = runs
    result = compare([root / "base", root / "tuned"], tmp_path, labels=["base", "tuned"], examples=0)
    md = (tmp_path / "report.md").read_text()
    undefined = [c for c in result.task("t").correctness if c.run == "base"]
    assert undefined and all(c.n_correct == 0 for c in undefined)  # the data: base never right
    assert "base has no correct answers by acc (0 of 24 correct)" in md
    assert f"undefined for {len(undefined)} metrics" in md
    table = md.split("Does the metric separate correct")[1].split("\n\n")[1]
    assert "| base |" not in table and "| tuned |" in table


def test_markdown_is_plain_text_and_inert(runs, tmp_path):
    root, _ = runs
    compare([root / "base", root / "tuned"], tmp_path, labels=["base", "tuned"], examples=0)
    md = (tmp_path / "report.md").read_text()
    assert "&lt;" not in md and "&gt;" not in md and "&amp;" not in md
    assert "[click\\](javascript:alert(1))" in md and "](javascript" not in md.replace("\\](", "")
    assert "\\<b>bold\\</b> a -> b" in md


def test_an_opposite_finding_says_where_the_attribution_went():
    """Finding 1 the other way round: the row names the prompt parts that took the tuned run's attribution
    (the largest mean attribution shares), from the same paired rows."""
    from lm_interp_plugin.report.analysis import PairedComparison, TaskAnalysis
    from lm_interp_plugin.report.findings import check_findings

    def row(metric, base, tuned, p):
        return PairedComparison(
            "t", metric, "base", "tuned", 40, base, tuned, tuned - base, 0, 0, {"p_value": p}, {}, {}
        )

    task = TaskAnalysis(
        "t",
        ["base", "tuned"],
        paired=[
            row("instruction_importance", 0.45, 0.05, 1e-10),
            row("attribution_share_instruction", 0.60, 0.05, 1e-9),
            row("attribution_share_template", 0.30, 0.85, 1e-9),
            row("attribution_share_content", 0.10, 0.10, 0.9),
        ],
    )
    (check,) = check_findings([task])
    assert check.verdict == "opposite"
    assert check.explanation == (
        "tuned's attribution mass by prompt part: template 0.85 (baseline 0.30), content 0.10 (baseline "
        "0.10), instruction 0.05 (baseline 0.60)"
    )
    assert check.sentence().endswith("opposite (" + check.explanation + ")")
    task.paired[0] = row("instruction_importance", 0.05, 0.45, 1e-10)
    assert check_findings([task])[0].explanation == ""  # shows up: nothing to explain


@pytest.mark.slow  # the whole CLI compare path
def test_cli_pair_flag(runs, tmp_path, capsys):
    from lm_interp_plugin.cli import main

    root, _ = runs
    args = ["compare", str(root / "base"), str(root / "tuned"), "--labels", "a,b", "--examples", "0"]
    assert main([*args, "--out", str(tmp_path / "o1"), "--pair", "a:b"]) == 0
    assert "paper findings checked for a -> b (declared with --pair)" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "o2")]) == 0
    assert "no base/tuned pair declared" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "o3"), "--pair", "ab"]) == 2
    assert "'ab' is not BASE:TUNED" in capsys.readouterr().err


def test_contents_folds_and_expand_cells_are_escaped_and_linked():
    """The table of contents links every level-2 title (folds with their level-3 headings) to an id that
    exists; fold titles, expand cells and their full text stay text; Markdown shows the full text."""
    from lm_interp_plugin.report import render as R

    evil = "<img src=x onerror=alert(1)>"
    blocks = [
        R.Heading("Findings"),
        R.Table(["run", "folder"], [["base", R.Expand("short", "/very/long/" + evil)]]),
        R.Fold("Task " + evil, [R.Heading("every example", 3), R.Paragraph("x")], anchor="task-a"),
        R.Fold("Task two", [R.Heading("every example", 3)]),
    ]
    html_text = R.to_html("t", blocks)
    assert evil not in html_text and "&lt;img src=x onerror=alert(1)&gt;" in html_text
    nav = html_text.split('<nav class="toc"', 1)[1].split("</nav>", 1)[0]
    links = re.findall(r'href="#([^"]+)"', nav)
    assert len(links) == 5 and len(set(links)) == 5  # 1 heading, 2 folds, 2 level-3 headings: unique ids
    assert all(f'id="{link}"' in html_text for link in links)
    assert '<details class="fold" id="task-a" open>' in html_text
    assert '<td><details class="cell"><summary>short</summary>' in html_text
    md = R.to_markdown("t", blocks)
    assert "/very/long/\\<img src=x onerror=alert(1)>" in md and "## Task two" in md


def test_short_run_names():
    from lm_interp_plugin.report.sections.runs import short_name

    assert short_name("/tmp/d/runs/base/__work__wt__lm_interp_plugin__data__demo_pair__base") == "base"
    assert short_name("/home/u/models/llama-3-8b-instruct") == "llama-3-8b-instruct"
    assert short_name("EleutherAI/pythia-160m") == "EleutherAI/pythia-160m"  # a hub id as it is
    assert short_name(None) == "\u2013"
    long = short_name("/m/" + "x" * 50)
    assert len(long) == 28 and long.startswith("\u2026")
