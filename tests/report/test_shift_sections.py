"""Issue 23's report sections end to end on synthetic runs: flips (counts against the planted correctness,
links to the token views), the Holm-corrected family, and the comparability note."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lm_interp_plugin.methods.multiple_testing import holm
from lm_interp_plugin.report import compare

from fixtures_report import doc_hash, make_docs, scored, write_run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("shift_runs")
    docs = make_docs(12, seed=3, prefix="f")
    base, tuned = scored(docs, seed=11), scored(docs, seed=12, shift=0.4)
    write_run(root / "base", "org/base", {"interp_f": base})
    write_run(root / "tuned", "org/tuned", {"interp_f": tuned}, seed=1)
    out = root / "report"
    compare([root / "base", root / "tuned"], out, labels=["base", "tuned"], examples=1)
    return {"base": base, "tuned": tuned, "out": out}


def test_flips_section_counts_the_planted_flips_and_links_token_views(report):
    saved = json.loads((report["out"] / "results.json").read_text())
    (flips,) = saved["flips"]
    pairs = list(zip(report["base"], report["tuned"]))
    up = sum(b.acc < 0.5 <= t.acc for b, t in pairs)
    down = sum(t.acc < 0.5 <= b.acc for b, t in pairs)
    assert flips["counts"]["wrong->right"] == up and flips["counts"]["right->wrong"] == down
    assert up + down == len(flips["items"]) > 0
    by_hash = {doc_hash(b.doc): (b, t) for b, t in pairs}
    for item in flips["items"]:
        b, t = by_hash[item["key"]]
        delta = item["deltas"]["instruction_attention"]
        assert delta == pytest.approx(t.attention - b.attention)
    html = (report["out"] / "report.html").read_text()
    assert "Answers that flip between base and tuned" in html
    assert 'href="#ex-interp_f-tuned-' in html  # a flipped item links to its token view


def test_corrected_section_is_holm_over_the_pairs_paired_tests(report):
    saved = json.loads((report["out"] / "results.json").read_text())
    tests = saved["corrected_tests"]["tests"]
    paired = saved["tasks"]["interp_f"]["paired"]
    assert [t["metric"] for t in tests] == [p["metric"] for p in paired]
    raw = [p["paired_t"]["p_value"] for p in paired]
    assert [t["p_value"] for t in tests] == pytest.approx(raw)
    assert [t["p_holm"] for t in tests] == pytest.approx(holm(raw))
    md = (report["out"] / "report.md").read_text()
    assert "p (Holm)" in md


def test_comparability_without_faithfulness_signals_says_why(report):
    saved = json.loads((report["out"] / "results.json").read_text())
    (task,) = saved["comparability"]
    assert task["rows"] == [] and not task["flagged"] and "interp_deletion=true" in task["absent"]


def _hand_holm(p_values: list[float]) -> list[float]:
    """Holm (1979) as the textbook states it, written apart from `methods.multiple_testing`: the j-th
    smallest of m p-values times (m - j + 1), made monotone by a running maximum, capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    m, running, adjusted = len(p_values), 0.0, [0.0] * len(p_values)
    for j, i in enumerate(order, start=1):
        running = max(running, (m - j + 1) * p_values[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def test_findings_carry_the_holm_p_beside_the_uncorrected_p_and_the_bootstrap_interval(report):
    saved = json.loads((report["out"] / "results.json").read_text())
    paired = saved["tasks"]["interp_f"]["paired"]
    expected = dict(
        zip([p["metric"] for p in paired], _hand_holm([p["paired_t"]["p_value"] for p in paired]))
    )
    ci = {p["metric"]: (p["diff_ci_low"], p["diff_ci_high"]) for p in paired}
    findings = [f for f in saved["findings"] if f["p_value"] is not None]
    assert findings  # the planted shift gives the findings' metrics p-values
    for finding in findings:
        assert finding["p_holm"] == pytest.approx(expected[finding["metric"]], rel=1e-12)
        assert finding["p_holm"] >= finding["p_value"]
        assert (finding["diff_ci_low"], finding["diff_ci_high"]) == pytest.approx(ci[finding["metric"]])
    md = (report["out"] / "report.md").read_text()
    table = md[md.index("Paper findings check") :]
    header = next(line for line in table.splitlines() if line.startswith("| finding"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells.index("95% CI") < cells.index("p (paired t)") == cells.index("p (Holm)") - 1
    html = (report["out"] / "report.html").read_text()
    assert html.count("p (Holm)") >= 2  # the findings table and the corrected section's


def test_comparability_comes_before_the_findings_in_the_report(report):
    """Whether the two models' attributions are comparably faithful is read before attribution is compared."""
    md = (report["out"] / "report.md").read_text()
    comparability = md.index("Are the two models' attributions comparably faithful?")
    assert comparability < md.index("The paper's findings on these runs")
    assert comparability < md.index("Base vs tuned: every paired test, Holm-corrected")
    html = (report["out"] / "report.html").read_text()
    assert html.index("comparably faithful?") < html.index("findings on these runs")


def test_a_flagged_comparability_is_said_on_the_attribution_finding(tmp_path):
    """A tuned model whose deletion gain is a fifth of the base's: the comparability section flags the task
    and the finding that compares attribution across the two models (finding 1) says so in its row."""
    rng = np.random.default_rng(5)
    docs = make_docs(30, seed=5, prefix="g")
    base, tuned = scored(docs, seed=21), scored(docs, seed=22, shift=0.4)
    gains = rng.normal(1.0, 0.1, len(docs))
    for b, t, gain in zip(base, tuned, gains):
        b.extra, t.extra = {"deletion_gain_gxi": float(gain)}, {"deletion_gain_gxi": float(gain) * 0.2}
    write_run(tmp_path / "base", "org/base", {"interp_g": base})
    write_run(tmp_path / "tuned", "org/tuned", {"interp_g": tuned}, seed=1)
    out = tmp_path / "report"
    compare([tmp_path / "base", tmp_path / "tuned"], out, labels=["base", "tuned"], examples=0)
    saved = json.loads((out / "results.json").read_text())
    assert saved["comparability"][0]["flagged"]
    by_finding = {f["finding"]: f for f in saved["findings"]}
    flag = "flagged by the comparability check: tuned is clearly less faithful"
    assert flag in by_finding[1]["explanation"]
    assert "comparability" not in by_finding[2]["explanation"]  # attention is not an attribution
