"""Faults a shared eval cluster produces (kills, full disks, edited files, changed flags and weights): a rerun
never reuses a record that no longer matches, and loses nothing.

One test per row of the probe table of the issue "Records you can trust", then a seeded randomized property
test: random sequences of (run, kill at a random record, truncate or garble the records file, change flags or
weights, rerun) end with samples and records equal to a fresh uninterrupted run of the last configuration.
Tiny models, `--limit` 2-3, one task without the stock task index.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import pytest

from lm_interp_plugin.records import (
    InterpRecord,
    RecordWriter,
    _checksum,
    load_records,
    read_records,
    record_files,
    record_line,
    record_path,
)

from lmeval_run import cli_run, plugin_task_manager, run_lmeval

TASK = "interp_instruct_mc"
LIMIT = 3


# -- helpers
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def task_manager():
    return plugin_task_manager(include_defaults=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, lm_tokenizer, tiny_llama_dir, tiny_model) -> dict[str, Path]:
    """Two checkpoints, same architecture and tokenizer: A (the shared tiny Llama) and B (another seed)."""
    from lm_interp_plugin.testing.tiny import save_tiny

    other = save_tiny(tiny_model("llama", seed=1), lm_tokenizer, tmp_path_factory.mktemp("wB") / "m")
    return {"A": tiny_llama_dir, "B": other}


def install(weights: dict[str, Path], which: str, path: Path) -> Path:
    """Put checkpoint `which` at `path` (the same path for every checkpoint: new weights, same name)."""
    if path.exists():
        shutil.rmtree(path)
    shutil.copytree(weights[which], path)
    return path


def evaluate(task_manager, model: Path, records: Path, limit: int = LIMIT, extra: str = "", out=None, **kw):
    """One lm-eval evaluation with interp-hf; with `out`, also the samples and results files."""
    return run_lmeval(
        f"pretrained={model},records_dir={records}{extra}",
        [TASK],
        limit=limit,
        task_manager=task_manager,
        out=out,
        **kw,
    )


def samples_of(results) -> list[dict]:
    return sorted(results["samples"][TASK], key=lambda s: s["doc_id"])


def effective_records(records_dir: Path) -> dict[tuple, dict]:
    """The record each request stands on after a run: the newest valid one per request key."""
    out: dict[tuple, dict] = {}
    for path in record_files(records_dir):
        for rec in read_records(path).records:
            out[rec.key] = rec.to_dict()
    return out


def records_path(records_dir: Path) -> Path:
    return records_dir / f"interp_records_{TASK}.jsonl"


def rewrite_line(path: Path, index: int, edit, keep_checksum: bool = True) -> None:
    """Edit the record on line `index` (a dict edit); `keep_checksum=False` writes a fresh, valid checksum, as
    if the harness had written the edited content."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    data = json.loads(lines[index])
    stored = data.pop("checksum")
    edit(data)
    data["checksum"] = stored if keep_checksum else _checksum(data)
    lines[index] = json.dumps(data, ensure_ascii=False) + "\n"
    path.write_text("".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def fresh_a(task_manager, weights, tmp_path_factory):
    """A fresh uninterrupted run of checkpoint A with default settings: the reference."""
    records = tmp_path_factory.mktemp("fresh_a")
    results = evaluate(task_manager, weights["A"], records)
    return samples_of(results), effective_records(records), records


# -- the table of the issue, row by row
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_new_weights_under_the_same_path_are_recomputed(task_manager, weights, tmp_path, caplog):
    model = install(weights, "A", tmp_path / "model")
    records = tmp_path / "records"
    evaluate(task_manager, model, records)
    install(weights, "B", model)
    with caplog.at_level(logging.INFO, logger="lm_interp_plugin"):
        again = evaluate(task_manager, model, records)
    summary = [r.getMessage() for r in caplog.records if "interpretation records in" in r.getMessage()]
    assert (
        summary
        and f"0 reused, 0 computed, {LIMIT} recomputed ({LIMIT} model changed (weight_hash" in (summary[-1])
    )
    fresh = evaluate(task_manager, model, tmp_path / "fresh_b")
    assert samples_of(again) == samples_of(fresh)
    assert effective_records(records) == effective_records(tmp_path / "fresh_b")


@pytest.mark.slow  # runs lm-eval end to end
@pytest.mark.parametrize(
    "change", [{"num_fewshot": 2}, {"system_instruction": "Read the instruction first."}], ids=str
)
def test_a_changed_prompt_is_recomputed(task_manager, weights, fresh_a, tmp_path, change):
    records = tmp_path / "records"
    shutil.copytree(fresh_a[2], records)
    again = evaluate(task_manager, weights["A"], records, **change)
    fresh = evaluate(task_manager, weights["A"], tmp_path / "fresh", **change)
    assert samples_of(again) == samples_of(fresh)
    now, before = effective_records(records), fresh_a[1]
    assert now == effective_records(tmp_path / "fresh")
    for key, rec in now.items():
        assert len(rec["prompt_tokens"]) > len(before[key]["prompt_tokens"])  # the longer prompt, stored


@pytest.mark.slow  # runs lm-eval end to end
def test_a_write_cut_mid_line_is_repaired_and_recomputed(task_manager, weights, fresh_a, tmp_path):
    records = tmp_path / "records"
    shutil.copytree(fresh_a[2], records)
    path = records_path(records)
    text = path.read_bytes()
    path.write_bytes(text[: len(text) - 25])  # the last record lost its end (ulimit -f, a full disk)
    again = evaluate(task_manager, weights["A"], records)
    assert samples_of(again) == fresh_a[0]
    loaded = load_records(path, strict=True)  # every line whole: nothing glued onto the partial line
    assert len(loaded) == LIMIT
    assert effective_records(records) == fresh_a[1]


@pytest.mark.slow  # runs lm-eval end to end
@pytest.mark.parametrize("keep_checksum", [True, False], ids=["edited", "valid-checksum"])
def test_metrics_null_is_recomputed_not_a_crash(task_manager, weights, fresh_a, tmp_path, keep_checksum):
    records = tmp_path / "records"
    shutil.copytree(fresh_a[2], records)
    rewrite_line(records_path(records), 1, lambda d: d.update(metrics=None), keep_checksum=keep_checksum)
    again = evaluate(task_manager, weights["A"], records)
    assert samples_of(again) == fresh_a[0]
    assert effective_records(records) == fresh_a[1]


@pytest.mark.slow  # runs lm-eval end to end
@pytest.mark.parametrize("keep_checksum", [True, False], ids=["edited", "valid-checksum"])
def test_a_changed_value_is_not_reused(task_manager, weights, fresh_a, tmp_path, keep_checksum):
    records = tmp_path / "records"
    shutil.copytree(fresh_a[2], records)

    def edit(data):
        data["metrics"]["attribution_share_instruction"] = 9.5  # a share: out of [0, 1]

    rewrite_line(records_path(records), 0, edit, keep_checksum=keep_checksum)
    again = evaluate(task_manager, weights["A"], records)
    assert samples_of(again) == fresh_a[0]
    assert all(s["attribution_share_instruction"] <= 1 for s in samples_of(again))


@pytest.mark.slow
def test_compare_does_not_mix_two_evaluations_of_one_folder(task_manager, weights, tmp_path):
    """--limit 3, then --limit 2 with interp_L=8 into the same folder: compare uses the newest evaluation,
    for every metric, and the records of that evaluation only."""
    from lm_interp_plugin.report import compare

    out = tmp_path / "mixed"
    records = tmp_path / "records"
    evaluate(task_manager, weights["A"], records, limit=3, out=out)
    evaluate(task_manager, weights["A"], records, limit=2, extra=",interp_L=8", out=out)
    evaluate(task_manager, weights["B"], tmp_path / "records_b", limit=3, out=tmp_path / "other")
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    shutil.copytree(records, folder, dirs_exist_ok=True)
    result = compare([tmp_path / "other", out], tmp_path / "report", examples=0)
    task = result.task(TASK)
    label = task.runs[1]
    counts = {s.metric: s.n for s in task.leaderboard[label]}
    assert counts["acc"] == counts["instruction_importance"] == 2, counts
    notes = " ".join(task.notes)
    assert "evaluations of interp_instruct_mc" in notes and "left out" in notes


@pytest.mark.slow
def test_resume_is_visible_at_lm_eval_s_default_verbosity(weights, tmp_path):
    """Under lm-eval's own logging set-up (as in `lm-interp run` and `lm_eval`), the reuse summary prints."""
    import subprocess
    import sys

    script = f"""
import lm_eval, lm_eval.utils
from lm_eval.tasks import TaskManager
import lm_interp_plugin.harness.model
from lm_interp_plugin.harness.tasks import tasks_dir
lm_eval.utils.setup_logging()
tm = TaskManager(include_path=[tasks_dir()], include_defaults=False)
for _ in range(2):
    lm_eval.simple_evaluate(model="interp-hf", model_args="pretrained={weights["A"]},records_dir={tmp_path}",
        tasks=["{TASK}"], limit=2, task_manager=tm, bootstrap_iters=0, device="cpu")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 reused, 0 computed, 0 recomputed" in proc.stderr
    assert "0 reused, 2 computed" in proc.stderr


@pytest.mark.slow  # runs lm-eval end to end
def test_a_resumed_run_is_bit_identical_ffn_included(task_manager, weights, fresh_a, tmp_path):
    """Stopped after one document, resumed: the FFN components of the second part come from the npz cache,
    those of the uninterrupted run were computed fresh; every value is identical."""
    records = tmp_path / "records"
    evaluate(task_manager, weights["A"], records, limit=1)
    again = evaluate(task_manager, weights["A"], records)
    assert samples_of(again) == fresh_a[0]
    assert effective_records(records) == fresh_a[1]
    assert any(r["ffn"] for r in fresh_a[1].values())


@pytest.mark.slow  # runs lm-eval end to end
@pytest.mark.parametrize(
    "arg, message",
    [
        ("interp_ffn=ture", "interp_ffn='ture' is not a boolean"),
        ("interp_attention=flase", "interp_attention='flase' is not a boolean"),
        ("interp_L=abc", "interp_L='abc' is not an integer"),
        ("interp_chunk_size=1.5", "interp_chunk_size=1.5 is not an integer"),
        ("interp_ig=true,interp_ig_steps=0", "interp_ig_steps must be a positive integer"),
    ],
)
def test_arguments_fail_at_start_up_naming_the_key(task_manager, tmp_path, arg, message):
    """Checked before the model is loaded: the model path does not even exist."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        evaluate(task_manager, tmp_path / "no-such-model", tmp_path, extra="," + arg)


@pytest.mark.slow
def test_lm_interp_run_reports_a_bad_argument_in_one_line(tmp_path):
    """`lm-interp run` with a typo in a boolean: one `lm-interp: error:` line naming the key, exit status 1,
    no traceback, and the model (a path that does not exist) is never loaded."""
    args = f"pretrained={tmp_path / 'nothing'},interp_ffn=ture"
    proc = cli_run("lm-interp", args, TASK, limit=1, quiet=False, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lm-interp: error: interp_ffn='ture' is not a boolean"), last
    assert "Traceback" not in proc.stderr


def test_strict_booleans_and_numbers():
    from lm_interp_plugin.interpret.settings import InterpSettings

    ok = InterpSettings.from_kwargs(
        {"interp_ffn": "FALSE", "interp_ig": 1, "interp_deletion": "0", "interp_L": 8.0, "interp_p": "4"}
    )
    assert (ok.ffn, ok.ig, ok.deletion, ok.L, ok.p) == (False, True, False, 8, 4.0)
    for bad in ({"interp_ffn": "yes"}, {"interp_ffn": 2}, {"interp_eps": "nan"}, {"interp_ffn_k": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            InterpSettings.from_kwargs(bad)


# -- compare and explain rows
# ------------------------------------------------------------------------------------------------
def _report_runs(tmp_path):
    from fixtures_report import make_docs, scored, write_run

    docs = make_docs(6, seed=0)
    base = write_run(tmp_path / "base", "base", {"t": scored(docs, 1)})
    tuned = write_run(tmp_path / "tuned", "tuned", {"t": scored(docs, 2)})
    return base, tuned


def test_compare_a_run_with_itself_says_so(tmp_path):
    from lm_interp_plugin.report import compare

    _report_runs(tmp_path)
    result = compare([tmp_path / "base", tmp_path / "base"], tmp_path / "out", examples=0)
    assert any("same evaluation" in n for n in result.task("t").notes), result.task("t").notes


def test_compare_notes_different_prompts_and_tokenizers(tmp_path):
    from lm_interp_plugin.report import compare

    from fixtures_report import rewrite_records

    base, tuned = _report_runs(tmp_path)
    (samples,) = tuned.glob("samples_t_*.jsonl")
    rows = [json.loads(x) for x in samples.read_text().splitlines()]
    for row in rows[:2]:
        row["prompt_hash"] = "another prompt"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for folder, tok in ((base, "tok-a"), (tuned, "tok-b")):
        (path,) = folder.glob("interp_records_t*.jsonl")
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        for rec in lines:
            rec["fingerprint"]["tokenizer_hash"] = tok
        rewrite_records(path, lines)
    notes = " ".join(compare([tmp_path / "base", tmp_path / "tuned"], tmp_path / "out").task("t").notes)
    assert "2 of 6 shared documents of t were shown to tuned and base with different prompts" in notes
    assert "tokenize t differently" in notes


def test_compare_takes_a_results_file_as_a_run(tmp_path):
    from lm_interp_plugin.report import compare

    base, _ = _report_runs(tmp_path)
    (results,) = base.glob("results_*.json")
    result = compare([results, tmp_path / "tuned"], tmp_path / "out", examples=0)
    assert result.task("t").overlaps[0].n_shared == 6


@pytest.mark.parametrize("family", ["bert", "t5"])  # OPT is a supported decoder since issue 21
def test_explain_heads_on_an_unsupported_architecture_is_one_line(tmp_path, capsys, family):
    """Refused from the config, before loading weights: one `lm-interp: error:` line, no traceback; the
    traceback with --verbosity DEBUG."""
    from transformers import AutoConfig

    from lm_interp_plugin.arch import UnsupportedArchitectureError
    from lm_interp_plugin.cli import main

    AutoConfig.for_model(family).save_pretrained(tmp_path / family)
    code = main(["explain-heads", str(tmp_path / family), "--out", str(tmp_path / "h.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.count("\n") == 0 and err.startswith("lm-interp: error:") and "Traceback" not in err, err
    assert repr(family) in err and len(err) < 500
    with pytest.raises(UnsupportedArchitectureError):
        main(
            [
                "explain-heads",
                str(tmp_path / family),
                "--out",
                str(tmp_path / "h.jsonl"),
                "--verbosity",
                "DEBUG",
            ]
        )


def test_report_md_escapes_markdown_links_from_documents(tmp_path):
    from lm_interp_plugin.report import compare
    from lm_interp_plugin.report.render import _md

    _report_runs(tmp_path)
    link = "[x](javascript:alert(1))"
    compare([tmp_path / "base", tmp_path / "tuned"], tmp_path / "out", labels=[link, "tuned"], examples=1)
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    # inert: "](" is escaped, so no renderer forms a link (the report's own escaping, readable as text)
    assert link not in md and "[x\\](javascript:alert(1))" in md
    assert _md("![i](http://e/x.png) \\[y](z)") == "![i\\](http://e/x.png) \\\\[y\\](z)"
    assert _md("[a]: http://e").startswith("\\[a")  # a reference definition cannot form either


# -- crash-safe writer units
# ------------------------------------------------------------------------------------------------
def _record(i: int) -> InterpRecord:
    return InterpRecord(
        task="t",
        doc_id=i,
        doc_hash=f"h{i}",
        request_index=0,
        request_type="loglikelihood",
        role="gold",
        prompt_tokens=["a", "b"],
        target_tokens=["c"],
        token_parts=["instruction", "content"],
        raw=[[0.5], [0.25]],
        quantised=[[10], [5]],
        params={"L": 10},
        metrics={"instruction_importance": 0.5},
    )


def test_a_failed_write_leaves_no_partial_line(tmp_path, monkeypatch):
    from lm_interp_plugin.records import RecordWriter, record_path

    writer = RecordWriter(tmp_path)
    writer.write(_record(0))
    handle = writer._handle("t")
    real_write = handle.write

    def full_disk(data):
        real_write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(handle, "write", full_disk, raising=False)
    with pytest.raises(OSError):
        writer.write(_record(1))
    monkeypatch.undo()
    writer.write(_record(2))
    writer.close()
    assert [r.doc_id for r in load_records(record_path(tmp_path, "t"), strict=True)] == [0, 2]


def test_record_lines_round_trip_and_reject_bad_values():
    from lm_interp_plugin.records import InvalidRecordError, parse_record_line

    rec = _record(0)
    assert parse_record_line(record_line(rec)) == rec
    for edit in (
        lambda d: d.update(metrics=None),
        lambda d: d.update(doc_id="3"),
        lambda d: d["metrics"].update(instruction_importance=float("inf")),
        lambda d: d.update(raw=[[0.5]]),
        lambda d: d.update(quantised=[[11], [5]]),
    ):
        data = rec.to_dict()
        edit(data)
        line = json.dumps({**data, "checksum": "0"})
        with pytest.raises(InvalidRecordError):
            parse_record_line(line)


# -- the randomized property test
# ------------------------------------------------------------------------------------------------
N_SEQUENCES = 5


class _Killed(Exception):
    """Stands for SIGKILL in the middle of a run (records already flushed stay, the rest never comes)."""


@pytest.mark.slow
def test_random_fault_sequences_end_equal_to_a_fresh_run(task_manager, weights, tmp_path, monkeypatch):
    """Seeded random sequences of runs (some killed at a random record), truncated and garbled record files,
    changed flags and weights; after a final complete run of the last configuration, its samples and its
    effective records equal those of a fresh uninterrupted run of that configuration (nothing stale, nothing
    lost). Tries `N_SEQUENCES` (5) sequences: a run, 2-3 random steps, a final run (about 50 s on a busy
    2-core CPU)."""
    from lm_interp_plugin.harness.model import InterpHFLM

    rng = random.Random(1234)
    limit = 2
    model = tmp_path / "model"
    fresh: dict[tuple, tuple] = {}
    real_interpret = InterpHFLM._interpret_one
    budget = {"left": None}

    def interpret(self, *args, **kwargs):
        if budget["left"] is not None:
            if budget["left"] == 0:
                raise _Killed
            budget["left"] -= 1
        return real_interpret(self, *args, **kwargs)

    monkeypatch.setattr(InterpHFLM, "_interpret_one", interpret)

    def run(config, records):
        which, fewshot, L = config
        install(weights, which, model)
        return evaluate(
            task_manager, model, records, limit=limit, extra=f",interp_L={L}", num_fewshot=fewshot
        )

    def reference(config):
        if config not in fresh:
            records = tmp_path / f"fresh_{len(fresh)}"
            results = run(config, records)
            fresh[config] = (samples_of(results), effective_records(records))
        return fresh[config]

    tried = 0
    for seq in range(N_SEQUENCES):
        records = tmp_path / f"seq{seq}"
        config = (rng.choice("AB"), rng.choice([0, 1]), rng.choice([10, 8]))
        steps = ["run"]
        run(config, records)
        for _ in range(rng.randint(2, 3)):
            op = rng.choice(["run", "kill", "truncate", "garble", "change"])
            steps.append(op)
            path = records_path(records)
            if op == "change":
                config = (rng.choice("AB"), rng.choice([0, 1]), rng.choice([10, 8]))
            elif op == "run":
                run(config, records)
            elif op == "kill":
                budget["left"] = rng.randint(0, limit - 1)
                try:  # killed at a random record (a run with nothing left to compute finishes)
                    run(config, records)
                except _Killed:
                    steps[-1] = f"kill after {budget['left']}"
                budget["left"] = None
            elif op == "truncate" and path.is_file() and path.stat().st_size:
                data = path.read_bytes()
                path.write_bytes(data[: rng.randint(0, len(data) - 1)])
            elif op == "garble" and path.is_file():
                lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
                if lines:
                    i = rng.randrange(len(lines))
                    j = rng.randrange(len(lines[i]) - 1)
                    lines[i] = lines[i][:j] + ("#" if lines[i][j] != "#" else "%") + lines[i][j + 1 :]
                    path.write_text("".join(lines), encoding="utf-8")
        final = run(config, records)
        want_samples, want_records = reference(config)
        assert samples_of(final) == want_samples, (seq, steps, config)
        assert effective_records(records) == want_records, (seq, steps, config)
        print(f"sequence {seq}: {steps} -> {config}")
        tried += 1
    assert tried == N_SEQUENCES


def test_fsync_benchmark_toy(tmp_path, monkeypatch, capsys):
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "records_fsync.py"
    spec = importlib.util.spec_from_file_location("bench_records_fsync", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "fsync.json"
    argv = ["records_fsync.py", "--n", "5", "--prompt", "4", "--targets", "2", "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--dir", str(tmp_path), "--json", str(out)])
    module.main()
    result = json.loads(out.read_text())
    assert result["fsyncs"]["every record"] == 6  # one per record, one on close
    assert result["fsyncs"]["flush only"] == 1  # on close only
    assert "x flush only" in capsys.readouterr().out


# -- issue 24's reliability rows inside interp-hf and its records: zero-mass density, edited records with a
# valid checksum, write errors, concurrent writers, unreadable lines, checks made once before the long passes
# ------------------------------------------------------------------------------------------------
# -- the pass
# ------------------------------------------------------------------------------------------------
def test_zero_mass_metrics_are_absent_with_a_reason(tiny_llama_dir, lm_tokenizer):
    """Every quantised level at or under b (here: eps larger than any attribution, as in the 20,000-character
    prompt whose largest attribution was 1.5e-7 against eps 1e-7): instruction_importance and the shares are
    undefined, so absent with a note; before, all were 0.0 and entered the task means."""
    import numpy as np
    from transformers import AutoModelForCausalLM

    from lm_interp_plugin.interpret.passes import run_pass
    from lm_interp_plugin.interpret.settings import InterpSettings

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    prompt = lm_tokenizer("Answer the question. What is two plus two?")["input_ids"]
    target = lm_tokenizer(" four", add_special_tokens=False)["input_ids"]
    labels = ["special"] + ["instruction"] * 4 + ["content"] * (len(prompt) - 5)
    settings = InterpSettings.from_kwargs({"interp_eps": 10.0, "interp_ffn": False})
    result = run_pass(model, prompt, target, labels, settings)
    assert result.quantised.max() <= settings.b and np.abs(result.raw).max() > 0
    assert not [k for k in result.metrics if k.startswith(("instruction_importance", "attribution_share"))]
    assert "instruction_attention" in result.metrics  # the other signals stay
    (note,) = [n for n in result.notes if "survives the sparsification" in n]
    assert f"b={settings.b}" in note and "left out" in note
    normal = run_pass(model, prompt, target, labels, InterpSettings.from_kwargs({"interp_ffn": False}))
    assert "instruction_importance" in normal.metrics
    assert not [n for n in normal.notes if "survives the sparsification" in n]


# -- records
# ------------------------------------------------------------------------------------------------
def test_a_write_error_names_the_file_and_that_the_command_resumes(tmp_path, monkeypatch):
    from lm_interp_plugin.records import RecordWriteError

    writer = RecordWriter(tmp_path)
    writer.write(_record(0))
    handle = writer._handle("t")

    def full_disk(data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(handle, "write", full_disk, raising=False)
    with pytest.raises(RecordWriteError) as err:
        writer.write(_record(1))
    text = str(err.value)
    assert str(record_path(tmp_path, "t")) in text and "No space left on device" in text, text
    assert "rerun the same command" in text
    monkeypatch.undo()
    writer.close()


def test_concurrent_writers_are_warned(tmp_path, caplog):
    """Two writers on one records file (two runs into one records_dir): the second is warned, naming the
    file; both still write whole lines."""
    first, second = RecordWriter(tmp_path), RecordWriter(tmp_path)
    first.write(_record(0))
    with caplog.at_level(logging.WARNING, logger="lm_interp_plugin"):
        second.write(_record(1))
    warned = [r.getMessage() for r in caplog.records if "another process" in r.getMessage()]
    assert len(warned) == 1 and str(record_path(tmp_path, "t")) in warned[0], warned
    first.write(_record(2))
    first.close()
    second.close()
    assert sorted(r.doc_id for r in load_records(record_path(tmp_path, "t"), strict=True)) == [0, 1, 2]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lm_interp_plugin"):  # the lock went with the writers
        with RecordWriter(tmp_path) as third:
            third.write(_record(3))
    assert not [r for r in caplog.records if "another process" in r.getMessage()]
    assert [p.name for p in tmp_path.iterdir()] == [record_path(tmp_path, "t").name]  # no lock file left


# -- interp-hf
# ------------------------------------------------------------------------------------------------
def test_records_dir_that_cannot_be_written_fails_before_the_model_loads(task_manager, tmp_path):
    """Before: after the whole loglikelihood pass, without naming records_dir. The model path does not
    exist: the check comes first."""
    with pytest.raises(ValueError, match=r"records_dir=/proc/x cannot be written"):
        evaluate(task_manager, tmp_path / "no-such-model", "/proc/x")


@pytest.mark.slow  # runs lm-eval end to end
def test_an_edited_record_with_a_valid_checksum_is_recomputed(
    task_manager, weights, fresh_a, tmp_path, caplog
):
    """A plausible value (in range) written with a fresh checksum: recomputed, because the record's own
    matrix gives another value."""
    records = tmp_path / "records"
    shutil.copytree(fresh_a[2], records)

    def edit(data):
        data["metrics"]["instruction_importance"] += 0.25

    rewrite_line(records_path(records), 0, edit, keep_checksum=False)
    with caplog.at_level(logging.INFO, logger="lm_interp_plugin"):
        again = evaluate(task_manager, weights["A"], records)
    assert samples_of(again) == fresh_a[0]
    assert effective_records(records) == fresh_a[1]
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "not what its own stored matrix gives" in text and "1 invalid record" in text, text


@pytest.mark.slow  # runs lm-eval end to end
def test_unreadable_lines_are_not_counted_as_computed(task_manager, weights, fresh_a, tmp_path, caplog):
    records = tmp_path / "records"
    shutil.copytree(fresh_a[2], records)
    path = records_path(records)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = "{this is not json\n"
    path.write_text("".join(lines), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="lm_interp_plugin"):
        evaluate(task_manager, weights["A"], records)
    (summary,) = [r.getMessage() for r in caplog.records if "interpretation records in" in r.getMessage()]
    assert f"{LIMIT - 1} reused, 0 computed, 1 recomputed (1 unreadable record line)" in summary, summary


@pytest.mark.slow
def test_a_bert_folder_is_refused(task_manager, lm_tokenizer, tmp_path):
    """Before: it ran to exit 0 under interp-hf."""
    import torch
    from transformers import BertConfig, BertLMHeadModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(lm_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertLMHeadModel(config).save_pretrained(tmp_path / "bert")
    lm_tokenizer.save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"is not a causal decoder"):
        evaluate(task_manager, tmp_path / "bert", tmp_path / "records")


@pytest.mark.slow
def test_nan_weights_are_named_before_the_passes(task_manager, weights, tmp_path):
    """Before: an FFN error on a float32 model, or "Out of range float values are not JSON compliant"."""
    import math

    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(weights["A"], model)
    tensors = load_file(model / "model.safetensors")
    name = sorted(k for k in tensors if "layers.0" in k and k.endswith("weight"))[0]
    tensors[name].view(-1)[0] = math.nan
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    for extra in ("", ",interp_ffn=false"):
        with pytest.raises(ValueError, match=rf"weight tensor\(s\) hold NaN or inf: model\.{name}|{name}"):
            evaluate(task_manager, model, tmp_path / f"records{extra}", extra=extra)
    assert not any((tmp_path / "records").glob("interp_records_*"))


@pytest.mark.slow  # runs lm-eval end to end
def test_a_record_of_another_model_relabelled_is_recomputed(task_manager, weights, fresh_a, tmp_path, caplog):
    """Checkpoint B's records given A's fingerprint (checksums recomputed): their matrices are consistent, but
    their target log-probabilities are not what A answers, so A recomputes them."""
    records = tmp_path / "records"
    evaluate(task_manager, weights["B"], records)
    a_print = next(iter(fresh_a[1].values()))["fingerprint"]
    path = records_path(records)
    for i in range(LIMIT):
        rewrite_line(path, i, lambda d: d.update(fingerprint=a_print), keep_checksum=False)
    with caplog.at_level(logging.INFO, logger="lm_interp_plugin"):
        again = evaluate(task_manager, weights["A"], records)
    assert samples_of(again) == fresh_a[0]
    assert effective_records(records) == fresh_a[1]
    (summary,) = [r.getMessage() for r in caplog.records if "interpretation records in" in r.getMessage()]
    assert f"{LIMIT} stored log-probabilities differ from this model's" in summary, summary
