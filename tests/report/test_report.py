"""`lm-interp compare` on synthetic lm-eval output folders: pairing, statistics, files, escaping, errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from lm_interp_plugin.report import NoOverlapError, NoSharedTaskError, RunDirError, compare
from lm_interp_plugin.report.analysis import jensen_shannon
from lm_interp_plugin.report.loading import resolve_runs
from lm_interp_plugin.report.render import SCRIPT, SCRIPT_HASH, _md

from fixtures_report import doc_hash, make_docs, rewrite_records, scored, write_run

N = 14
TASKS = ("interp_alpha", "interp_beta")


def _strict(text: str):
    def bad(const):
        raise ValueError(f"non-strict JSON constant {const}")

    return json.loads(text, parse_constant=bad)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Base and tuned runs of two tasks; the tuned run numbers the documents differently."""
    root = tmp_path_factory.mktemp("runs")
    docs = {t: make_docs(N, seed=i, prefix=t, evil=(t == TASKS[0])) for i, t in enumerate(TASKS)}
    base = {t: scored(d, seed=10 + i) for i, (t, d) in enumerate(docs.items())}
    tuned = {t: scored(d, seed=20 + i, shift=0.4) for i, (t, d) in enumerate(docs.items())}
    perm = {t: list(np.random.default_rng(5 + i).permutation(N).tolist()) for i, t in enumerate(TASKS)}
    write_run(root / "base", "org/base-7b", base)
    write_run(root / "tuned", "org/tuned-7b", tuned, doc_ids=perm, seed=1)
    out = root / "report"
    result = compare([root / "base", root / "tuned"], out, examples=2)
    return {
        "root": root,
        "docs": docs,
        "base": base,
        "tuned": tuned,
        "perm": perm,
        "out": out,
        "result": result,
    }


def test_pairs_on_doc_hash_not_doc_id(pair):
    result = pair["result"]
    for task in TASKS:
        analysis = result.task(task)
        assert [(o.n_baseline, o.n_other, o.n_shared) for o in analysis.overlaps] == [(N, N, N)]
        by_hash = {s.key: s for s in analysis.shifts}
        assert len(by_hash) == N
        for i, (b, t) in enumerate(zip(pair["base"][task], pair["tuned"][task])):
            shift = by_hash[doc_hash(b.doc)]
            assert shift.doc_id_baseline == i and shift.doc_id_other == pair["perm"][task][i]
            assert shift.deltas["instruction_importance"] == pytest.approx(t.importance - b.importance)
            assert shift.deltas["acc"] == t.acc - b.acc
            assert shift.ffn_jsd == pytest.approx(
                jensenshannon(
                    [b.shares[k] for k in sorted(b.shares)], [t.shares[k] for k in sorted(t.shares)], base=2
                )
                ** 2
            )


def test_statistics_match_scipy(pair):
    task = TASKS[1]
    analysis = pair["result"].task(task)
    base = np.array([d.importance for d in pair["base"][task]])
    tuned = np.array([d.importance for d in pair["tuned"][task]])
    cell = next(s for s in analysis.leaderboard["tuned"] if s.metric == "instruction_importance")
    assert cell.mean == pytest.approx(tuned.mean()) and cell.n == N
    assert cell.ci_low < cell.mean < cell.ci_high
    assert cell.reported == pytest.approx(tuned.mean())  # lm-eval's own aggregate, carried through
    acc_cell = next(s for s in analysis.leaderboard["base"] if s.metric == "acc")
    assert acc_cell.reported_stderr == pytest.approx(
        np.std([d.acc for d in pair["base"][task]], ddof=1) / math.sqrt(N)
    )
    p = next(c for c in analysis.paired if c.metric == "instruction_importance")
    assert p.n_pairs == N and p.mean_diff == pytest.approx((tuned - base).mean())
    assert p.diff_ci_low < p.mean_diff < p.diff_ci_high
    ref = sps.ttest_rel(tuned, base)
    assert p.paired_t["statistic"] == pytest.approx(ref.statistic) and p.paired_t["p_value"] == pytest.approx(
        ref.pvalue
    )
    assert p.wilcoxon["p_value"] == pytest.approx(sps.wilcoxon(tuned, base).pvalue)
    welch = sps.ttest_ind(tuned, base, equal_var=False)
    assert p.welch["statistic"] == pytest.approx(welch.statistic) and p.welch["p_value"] == pytest.approx(
        welch.pvalue
    )
    split = next(c for c in analysis.correctness if c.run == "base" and c.metric == "instruction_importance")
    acc = np.array([d.acc for d in pair["base"][task]]) == 1
    assert (split.n_correct, split.n_incorrect) == (acc.sum(), (~acc).sum())
    assert split.welch["p_value"] == pytest.approx(
        sps.ttest_ind(base[acc], base[~acc], equal_var=False).pvalue
    )
    assert split.mean_correct == pytest.approx(base[acc].mean())


def test_files_exist_and_carry_the_numbers(pair):
    out, result = pair["out"], pair["result"]
    data = _strict((out / "results.json").read_text(encoding="utf-8"))
    assert data["baseline"] == "base"
    cells = data["tasks"][TASKS[0]]["leaderboard"]["tuned"]
    mean = next(c["mean"] for c in cells if c["metric"] == "instruction_importance")
    assert mean == pytest.approx(np.mean([d.importance for d in pair["tuned"][TASKS[0]]]))
    assert len(data["tasks"][TASKS[0]]["shifts"]) == N
    md = (out / "report.md").read_text(encoding="utf-8")
    html_text = (out / "report.html").read_text(encoding="utf-8")
    assert f"{mean:.3f}" in md and f"{mean:.3f}" in html_text
    figures = result.files["figures"]
    assert figures and all((out / f).stat().st_size > 1000 for f in figures)
    assert all(f"]({f})" in md for f in figures)
    assert html_text.count("data:image/png;base64,") == len(figures)
    assert "attention" in " ".join(figures) and "tokens" in " ".join(figures)
    assert len(result.chosen_examples[TASKS[0]]) == 2
    # attention maps: mean over shared examples of the records' layers x heads arrays
    att = np.asarray(data["tasks"][TASKS[1]]["attention_means"]["tuned"])
    assert att.shape == (3, 4)
    assert att.mean() == pytest.approx(np.mean([d.attention for d in pair["tuned"][TASKS[1]]]), abs=0.01)
    assert not result.fingerprint_warnings  # only the model name differs, which is expected


def test_untrusted_text_is_escaped(pair, tmp_path):
    html_text = (pair["out"] / "report.html").read_text(encoding="utf-8")
    md = (pair["out"] / "report.md").read_text(encoding="utf-8")
    # the page's one script is the report's own (sorting/search), and the CSP lets only it run
    assert html_text.count("<script") == 1 and f"<script>{SCRIPT}</script>" in html_text
    assert f"script-src 'sha256-{SCRIPT_HASH}'" in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    # Markdown: backslash escapes, no entities (plain text stays readable), no live tag or link syntax
    assert not re.search(r"(?<!\\)<[A-Za-z/!?]", md)  # every '<' that could open a tag is escaped
    assert "\\<script>alert(1)\\</script>" in md and "\\| pipe" in md
    assert "&lt;" not in md and "&gt;" not in md and "&amp;" not in md
    assert _md("a|b\nc<d") == "a\\|b c\\<d"
    assert _md("a -> b < c & d") == "a -> b < c & d"
    assert _md("[x](javascript:alert(1))") == "\\[x\\](javascript:alert(1))"  # at the start of a line
    assert _md("see [x](javascript:1) ![i](y) [r][1]") == "see [x\\](javascript:1) ![i\\](y) [r\\][1]"
    assert _md("mean [95% CI] (n)") == "mean [95% CI] (n)"
    assert _md("> quote") == "\\> quote" and _md("-0.5") == "-0.5" and _md("&amp;") == "\\&amp;"
    evil = "<img src=x onerror=alert(1)>"
    compare([pair["root"] / "base", pair["root"] / "tuned"], tmp_path, labels=["base&co", evil], examples=0)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert evil not in page and "&lt;img src=x onerror=alert(1)&gt;" in page and "base&amp;co" in page


def test_partial_overlap_is_noted(tmp_path):
    docs = make_docs(N, seed=0)
    write_run(tmp_path / "base", "base", {"t": scored(docs, 1)})
    write_run(tmp_path / "tuned", "tuned", {"t": scored(docs[:9] + make_docs(2, 3, prefix="new"), 2)})
    result = compare([tmp_path / "base", tmp_path / "tuned"], tmp_path / "out", examples=0)
    assert result.task("t").overlaps[0].n_shared == 9
    assert result.task("t").paired[0].n_pairs == 9
    assert "partial overlap on t: 9 shared documents" in (tmp_path / "out" / "report.md").read_text()


def test_no_overlap_raises(tmp_path):
    write_run(tmp_path / "base", "base", {"t": scored(make_docs(5, 0, prefix="a"), 1)})
    write_run(tmp_path / "tuned", "tuned", {"t": scored(make_docs(5, 0, prefix="b"), 2)})
    with pytest.raises(NoOverlapError, match=r"shares no document.*doc_hash") as err:
        compare([tmp_path / "base", tmp_path / "tuned"], tmp_path / "out")
    assert str(tmp_path / "tuned") in str(err.value)


def test_different_tasks_raise(tmp_path):
    write_run(tmp_path / "base", "base", {"t1": scored(make_docs(4, 0), 1)})
    write_run(tmp_path / "tuned", "tuned", {"t2": scored(make_docs(4, 0), 2)})
    with pytest.raises(NoSharedTaskError, match=r"\['t2'\].*\['t1'\]: no task in common"):
        compare([tmp_path / "base", tmp_path / "tuned"], tmp_path / "out")


def test_empty_dir_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="holds no lm-eval output"):
        compare([tmp_path / "empty"], tmp_path / "out")


def test_corrupt_record_line_is_a_note(tmp_path):
    docs = make_docs(6, seed=0)
    write_run(tmp_path / "base", "base", {"t": scored(docs, 1)})
    folder = write_run(tmp_path / "tuned", "tuned", {"t": scored(docs, 2)})
    with open(folder / "interp_records_t.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"task": "t", "doc_id": 3, "trunc')
    result = compare([tmp_path / "base", tmp_path / "tuned"], tmp_path / "out", examples=1)
    assert any("corrupt interpretation record" in n and "tuned" in n for n in result.notes)
    assert "corrupt interpretation record" in (tmp_path / "out" / "report.md").read_text()
    assert result.task("t").overlaps[0].n_shared == 6


def test_missing_records_and_samples_variants(tmp_path):
    docs = make_docs(6, seed=0)
    write_run(tmp_path / "base", "base", {"t": scored(docs, 1)}, records=False)
    write_run(tmp_path / "tuned", "tuned", {"t": scored(docs, 2)})
    result = compare([tmp_path / "base", tmp_path / "tuned"], tmp_path / "out", examples=1)
    assert any("no interpretation records" in n for n in result.task("t").notes)
    assert not result.chosen_examples  # heatmaps need records on both sides


def test_newest_samples_file_and_model_subfolders(tmp_path):
    docs = make_docs(6, seed=0)
    old = scored(docs, 1)
    new = scored(docs, 2)
    write_run(tmp_path / "runs", "org/base", {"t": old}, date="2024-01-01T09-00-00.000000", records=False)
    write_run(tmp_path / "runs", "org/base", {"t": new}, date="2024-03-01T09-00-00.000000", records=False)
    write_run(tmp_path / "runs", "org/tuned", {"t": scored(docs, 3)})
    runs = resolve_runs([tmp_path / "runs"], None)
    assert [r.label for r in runs] == ["runs/org__base", "runs/org__tuned"]
    base = runs[0].tasks["t"]
    assert base.samples_file.name == "samples_t_2024-03-01T09-00-00.000000.jsonl"
    assert [s.metrics["instruction_importance"] for s in base.samples.values()] == pytest.approx(
        [d.importance for d in sorted(new, key=lambda d: doc_hash(d.doc))]
    )
    assert any("using the newest (2024-03-01T09-00-00.000000)" in n for n in base.notes)
    assert runs[0].model == "org/base"
    with pytest.raises(RunDirError, match="1 labels given for 2 runs"):
        resolve_runs([tmp_path / "runs"], ["x"])


def test_a_task_whose_name_extends_another_is_not_a_second_evaluation(tmp_path):
    """`samples_t_mc_*` is task t_mc, not a second evaluation of t (the demo's demo_instruct and
    demo_instruct_mc got a false "2 evaluations" note each)."""
    docs = make_docs(6, seed=0)
    write_run(tmp_path / "runs", "org/base", {"t": scored(docs, 1), "t_mc": scored(docs, 2)}, records=False)
    (run,) = resolve_runs([tmp_path / "runs"], None)
    assert set(run.tasks) == {"t", "t_mc"}
    for task in run.tasks.values():
        assert not any("evaluations of" in n for n in task.notes), task.notes
    write_run(tmp_path / "runs", "org/base", {"t": scored(docs, 3)}, date="2030-01-01T09-00-00.000000")
    (run,) = resolve_runs([tmp_path / "runs"], None)
    assert any(n.startswith("2 evaluations of t in") for n in run.tasks["t"].notes)
    assert not any("evaluations of" in n for n in run.tasks["t_mc"].notes)


def test_fingerprint_differences_warn(tmp_path):
    docs = make_docs(4, seed=0)
    write_run(tmp_path / "base", "base", {"t": scored(docs, 1)})
    write_run(
        tmp_path / "tuned",
        "tuned",
        {"t": scored(docs, 2)},
        fingerprint={"model": "tuned", "plugin_version": "0.2.0", "dtype": "float32"},
        params={"L": 10, "b": 0, "p": 2},
    )
    result = compare([tmp_path / "base", tmp_path / "tuned"], tmp_path / "out", examples=0)
    text = " ".join(result.fingerprint_warnings)
    assert "'plugin_version' differs" in text and "'params.p' differs" in text
    assert "'model'" not in text and "'dtype'" not in text
    assert "plugin_version" in (tmp_path / "out" / "report.html").read_text()


def test_per_request_mode_and_computation_settings_do_not_warn(tmp_path):
    """`auto` picks reverse/forward per request ("none" for an empty generation), and chunking/memory settings
    do not change values: neither is a fingerprint difference worth a warning."""
    import json as _json

    docs = make_docs(4, seed=0)
    base = write_run(tmp_path / "base", "base", {"t": scored(docs, 1)})
    write_run(tmp_path / "tuned", "tuned", {"t": scored(docs, 2)})
    (path,) = base.glob("interp_records_t*.jsonl")
    lines = [_json.loads(line) for line in path.read_text().splitlines()]
    for i, rec in enumerate(lines):
        rec["params"]["mode"] = ("reverse", "forward", "none")[i % 3]
        rec["fingerprint"].setdefault("settings", {})["chunk_size"] = 4 + i
    rewrite_records(path, lines)
    result = compare([tmp_path / "base", tmp_path / "tuned"], tmp_path / "out", examples=0)
    assert not [w for w in result.fingerprint_warnings if "mode" in w or "chunk_size" in w], (
        result.fingerprint_warnings
    )


def test_jensen_shannon_against_scipy():
    p, q = {"a": 0.7, "b": 0.3}, {"b": 0.5, "c": 1.5}
    ref = jensenshannon([0.7, 0.3, 0.0], [0.0, 0.25, 0.75], base=2) ** 2
    assert jensen_shannon(p, q) == pytest.approx(ref)
    assert jensen_shannon(p, p) == pytest.approx(0.0)
    assert jensen_shannon({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    assert jensen_shannon({}, q) is None


def _heads_file(path: Path, words: list[str]) -> Path:
    from lm_interp_plugin.explain.heads import write_heads_jsonl
    from lm_interp_plugin.methods.head_pairs import DimensionWords, HeadsExplanation, HeadWordPairs

    heads = [
        HeadWordPairs(
            layer,
            head,
            [(words[0], words[1], 1, 1.0)],
            [DimensionWords(0, 1, list(words), list(words), [(0, 1), (2, 3)])],
        )
        for layer in range(3)
        for head in range(2)
    ]
    return write_heads_jsonl(path, HeadsExplanation({"model": path.stem}, {"top_k": 5}, 3, 2, heads))


def _ffn_files(tmp_path: Path, tiny_model) -> list[Path]:
    from lm_interp_plugin.explain.ffn import explain_ffn, write_ffn_jsonl
    from lm_interp_plugin.testing.tiny import sample_corpus, train_tokenizer

    tok = train_tokenizer(sample_corpus(), vocab_size=400)
    paths = []
    for seed, name in ((0, "base"), (1, "tuned")):
        model = tiny_model("llama", tokenizer=tok, seed=seed, hidden=32, layers=2, heads=4, kv_heads=2)
        expl = explain_ffn(model, tok, k=3, top_n=4, progress=False)
        paths.append(write_ffn_jsonl(tmp_path / f"ffn_{name}.jsonl", expl))
    return paths


@pytest.fixture(scope="module")
def ffn_files(tmp_path_factory, tiny_model) -> list[Path]:
    """A base/tuned pair of explain-ffn files of two tiny models, made once for the tests that need them."""
    return _ffn_files(tmp_path_factory.mktemp("ffn"), tiny_model)


def _runs_and_heads(tmp_path, labels):
    """Two runs of one task (no records) and a base/tuned pair of explain-heads files."""
    docs = make_docs(4, seed=0)
    runs = [write_run(tmp_path / n, n, {"t": scored(docs, i)}, records=False) for i, n in enumerate(labels)]
    base = _heads_file(tmp_path / "base.jsonl", ["go", "sit", "eat", "run"])
    tuned = _heads_file(tmp_path / "tuned.jsonl", ["write", "summarize", "translate", "list"])
    return runs, base, tuned


def test_global_sections_from_explain_files(tmp_path, ffn_files):
    runs, base, tuned = _runs_and_heads(tmp_path, ["b", "t"])
    result = compare(runs, tmp_path / "out", examples=0, heads=[base, tuned], ffn=ffn_files)
    heads_section, ffn_section = result.sections["heads"], result.sections["ffn"]
    assert not heads_section.notes and heads_section.analysis is not None
    assert not ffn_section.notes and ffn_section.comparison is not None
    figs = result.files["figures"]
    assert [f.split("_", 1)[1] for f in figs[-2:]] == ["ffn_concept_proportions.png", "ffn_rotation.png"]
    assert all((tmp_path / "out" / f).stat().st_size > 1000 for f in figs[-2:])
    html_text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<th>verbs</th>" in html_text and "Table 3 form" in html_text and "Table 5 form" in html_text
    assert "<th>concept</th>" in html_text and "chi-square p" in html_text
    assert html_text.count("data:image/png;base64,") == len(result.files["figures"])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["heads"]["analysis"]["instruction_verbs"] and saved["ffn"]["comparison"]["layers"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    one = compare(runs, tmp_path / "out1", examples=0, heads=[base], ffn=[bad, bad])
    assert "give two files" in one.sections["heads"].notes[0]
    ffn_one = one.sections["ffn"]
    assert ffn_one.notes and ffn_one.comparison is None  # unreadable: a note, no crash


def test_every_registered_section_is_in_results_json(tmp_path, ffn_files):
    """The sections' contract: each registered section has its key in results.json (listed in "sections",
    in page order), and a section with nothing to show is null there, not missing."""
    from lm_interp_plugin.report.sections import registered

    runs, base, tuned = _runs_and_heads(tmp_path, ["base", "tuned"])
    compare(runs, tmp_path / "out", examples=0, heads=[base, tuned], ffn=ffn_files)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    names = [s.name for s in registered()]
    assert saved["sections"] == names
    assert all(name in saved for name in names)
    assert saved["findings"] and saved["differences"] == []  # labelled base and tuned: the paper's findings
    assert all(saved[name] is not None for name in names if name != "differences")
    bare = compare(runs, tmp_path / "bare", examples=0)  # no explain files: those sections are null
    saved = json.loads((tmp_path / "bare" / "results.json").read_text())
    assert saved["sections"] == names and saved["heads"] is None and saved["ffn"] is None
    assert set(bare.sections) == set(names)


def test_single_run_and_filters(tmp_path):
    docs = make_docs(5, seed=0)
    folder = write_run(tmp_path / "only", "m", {"t": scored(docs, 1)}, records=False)
    sample_file = next(folder.glob("samples_t_*.jsonl"))
    rows = [json.loads(line) for line in sample_file.read_text().splitlines()]
    with open(sample_file, "w", encoding="utf-8") as fh:  # a second filter, as gsm8k's flexible-extract
        for row in rows:
            fh.write(json.dumps(row) + "\n")
            fh.write(json.dumps({**row, "filter": "flexible", "acc": 1.0}) + "\n")
    result = compare([tmp_path / "only"], tmp_path / "out", baseline="only")
    cells = {c.metric: c for c in result.task("t").leaderboard["only"]}
    assert cells["acc,flexible"].mean == 1.0 and cells["acc"].mean == pytest.approx(
        np.mean([r["acc"] for r in rows])
    )
    assert not result.task("t").paired
    with pytest.raises(Exception, match="baseline 'x' is not one of"):
        compare([tmp_path / "only"], tmp_path / "out", baseline="x")


def test_findings_check_reads_the_paired_tests(tmp_path):
    """A planted rise of instruction importance and attention shows up; with no shift it does not; the
    table is in all three report files."""
    from lm_interp_plugin.report.findings import verdict

    docs = make_docs(40, seed=3)
    write_run(tmp_path / "base", "base", {"t": scored(docs, 1)})
    write_run(tmp_path / "tuned", "tuned", {"t": scored(docs, 2, shift=0.8)})
    write_run(tmp_path / "same", "same", {"t": scored(docs, 4)})
    # base with two "tuned" versions, one of them not really tuned: both declared pairs get checked
    result = compare(
        [tmp_path / "base", tmp_path / "tuned", tmp_path / "same"],
        tmp_path / "out",
        examples=0,
        pairs=[("base", "tuned"), ("base", "same")],
    )
    by = {(f.other, f.metric): f for f in result.findings}
    assert by[("tuned", "instruction_importance")].verdict == "shows up"
    assert by[("tuned", "instruction_attention")].verdict == "shows up"
    assert by[("same", "instruction_importance")].verdict == "not significant"
    row = by[("tuned", "instruction_importance")]
    paired = next(
        p for p in result.task("t").paired if p.other == "tuned" and p.metric == "instruction_importance"
    )
    assert row.p_value == paired.paired_t["p_value"] and row.mean_diff == paired.mean_diff
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["findings"]
    assert {(f["other"], f["metric"], f["verdict"]) for f in saved} >= {
        ("tuned", "instruction_importance", "shows up")
    }
    for name in ("report.md", "report.html"):
        assert "Paper findings check" in (tmp_path / "out" / name).read_text()
    assert verdict(-0.2, 0.001, +1) == "opposite" and verdict(-0.2, 0.001, -1) == "shows up"
    assert verdict(0.3, None, +1) == "untested" and verdict(0.3, 0.2, +1) == "not significant"


def test_half_precision_runs_get_the_float32_check_in_the_notes(tmp_path):
    """A bf16 run's report says how far its checked requests were from float32; one without checks says that
    the effect is unknown; float32 runs get no such note."""
    import json as _json

    docs = make_docs(6, seed=0)
    write_run(tmp_path / "base", "base", {"t": scored(docs, 1)})
    tuned = write_run(
        tmp_path / "tuned",
        "tuned",
        {"t": scored(docs, 2)},
        fingerprint={"model": "tuned", "dtype": "bfloat16"},
    )
    (path,) = tuned.glob("interp_records_t*.jsonl")
    lines = [_json.loads(line) for line in path.read_text().splitlines()]
    for i, rec in enumerate(lines[:3]):  # three checked requests: 2%, 4%, 6% off; importance 10%, 20%, 30%
        rec["extras"]["fp32_check"] = {
            "dtype": "bfloat16",
            "rel_error": 0.02 * (i + 1),
            "instruction_importance": 1.0 + 0.1 * (i + 1),
            "instruction_importance_float32": 1.0,
        }
    lines[4]["extras"]["precision"] = "float32 (re-run after non-finite bfloat16)"
    rewrite_records(path, lines)
    result = compare([tmp_path / "base", tmp_path / "tuned"], tmp_path / "out", examples=0)
    notes = [n for n in result.task("t").notes if "float32" in n]
    assert len(notes) == 1 and notes[0].startswith("tuned ran in bfloat16"), result.task("t").notes
    assert "3 requests" in notes[0] and "median 4.0%" in notes[0] and "median 20.0%" in notes[0]
    assert "max 30.0%" in notes[0] and "1 requests gave NaN/inf" in notes[0]
    assert "tuned ran in bfloat16" in (tmp_path / "out" / "report.md").read_text()
    for rec in lines:
        rec["extras"].pop("fp32_check", None)
    rewrite_records(path, lines)
    result = compare([tmp_path / "base", tmp_path / "tuned"], tmp_path / "out2", examples=0)
    assert any("no float32 check" in n for n in result.task("t").notes)


def test_note_severity_is_data_not_wording():
    import json

    from lm_interp_plugin.report.notes import Note, is_warning, warning

    loud = warning("two runs are the same evaluation")
    assert (
        is_warning(loud)
        and loud.startswith("WARNING: ")
        and loud.message == "two runs are the same evaluation"
    )
    assert not is_warning("WARNING: a plain string that only looks like one")
    assert not is_warning(Note("partial overlap"))
    assert json.loads(json.dumps([loud])) == ["WARNING: two runs are the same evaluation"]  # still a string
