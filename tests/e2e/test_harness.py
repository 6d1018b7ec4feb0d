"""The stock lm-eval path with a tiny local model: what a user of `--model interp-hf` sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lm_interp_plugin.records import load_records, record_files

from lmeval_run import cli_run, run_cli, run_lmeval

REPO = Path(__file__).resolve().parents[2]
TASKS = ["interp_instruct", "interp_instruct_mc"]
LIMIT = 4

pytestmark = pytest.mark.slow


def evaluate(model: str, model_args: str, tasks=TASKS, **kwargs):
    return run_lmeval(model_args, list(tasks), model=model, limit=LIMIT, **kwargs)


@pytest.fixture(scope="module")
def runs(tiny_llama_dir, tmp_path_factory):
    records = tmp_path_factory.mktemp("records")
    stock = evaluate("hf", f"pretrained={tiny_llama_dir}")
    interp = evaluate("interp-hf", f"pretrained={tiny_llama_dir},records_dir={records}")
    return stock, interp, records


def test_accuracy_is_identical_to_hf_sample_by_sample(runs):
    stock, interp, _ = runs
    for task in TASKS:
        a, b = stock["samples"][task], interp["samples"][task]
        assert [s["doc_hash"] for s in a] == [s["doc_hash"] for s in b]
        for sa, sb in zip(a, b):
            assert sa["resps"] == sb["resps"]
            for metric in sa["metrics"]:
                assert sa[metric] == sb[metric], (task, metric)


def test_samples_carry_interpretation_next_to_accuracy(runs):
    _, interp, _ = runs
    for task, stock_metric in (("interp_instruct", "exact_match"), ("interp_instruct_mc", "acc")):
        for sample in interp["samples"][task]:
            assert stock_metric in sample
            assert 0 <= sample["instruction_importance"] <= 20
            assert sample["instruction_found"] == 1.0
            shares = [v for k, v in sample.items() if k.startswith("attribution_share_")]
            assert {"attribution_share_instruction", "attribution_share_content"} <= set(sample)
            assert sum(shares) == pytest.approx(1.0)
            assert 0 <= sample["instruction_attention"] <= 1
            # FFN concept shares only for concepts valid on the model (a random model: usually none), and
            # then with "other" they sum to 1
            concepts = [v for k, v in sample.items() if k.startswith("ffn_concept_")]
            assert not concepts or (len(concepts) >= 2 and sum(concepts) == pytest.approx(1.0, abs=1e-4))
        assert any(s["instruction_importance"] > 0 for s in interp["samples"][task])  # not all zeros
        table = interp["results"][task]
        assert "instruction_importance,none" in table
        assert "instruction_attention_lift,none" in table
        # lm-eval's up/down column, from the metric table: a direction where it has one, none elsewhere
        directions = interp["higher_is_better"][task]
        assert directions["instruction_importance"] is True
        assert directions.get("ffn_concept_other", False) is False  # aggregated only where a concept is valid
        assert "instruction_attention_lift" not in directions


def test_records_are_complete_and_join_the_samples(runs):
    _, interp, records_dir = runs
    files = record_files(records_dir)
    assert {f.name for f in files} == {f"interp_records_{t}.jsonl" for t in TASKS}
    for task in TASKS:
        records = load_records(records_dir / f"interp_records_{task}.jsonl", strict=True)
        samples = {s["doc_hash"]: s for s in interp["samples"][task]}
        assert len(records) == LIMIT  # gold choice only (interp_choices=gold)
        for record in records:
            sample = samples[record.doc_hash]
            assert record.metrics["instruction_importance"] == pytest.approx(sample["instruction_importance"])
            assert len(record.raw) == len(record.prompt_tokens) == len(record.token_parts)
            assert len(record.raw[0]) == len(record.target_tokens)
            assert record.prompt_tokens[0] == "<s>" and record.token_parts[0] == "special"
            instruction = (
                "".join(t for t, p in zip(record.prompt_tokens, record.token_parts) if p == "instruction")
                .replace("Ġ", " ")
                .replace("Ċ", "\n")
            )
            assert instruction.strip() == sample["doc"]["instruction"]
            assert record.fingerprint["plugin_version"]
            layers_heads = record.attention["instruction_attention"]
            assert len(layers_heads) == 2 and len(layers_heads[0]) == 4  # tiny llama: 2 layers x 4 heads
            assert len(record.ffn["component_distribution"]) == 2
            if task == "interp_instruct_mc":
                assert record.role == "gold" and record.request_index == sample["doc"]["label"]


def test_rerun_resumes_from_records(runs, tiny_llama_dir):
    _, interp, records_dir = runs
    before = {f: f.read_text() for f in record_files(records_dir)}
    again = evaluate(
        "interp-hf", f"pretrained={tiny_llama_dir},records_dir={records_dir}", tasks=["interp_instruct_mc"]
    )
    assert {f: f.read_text() for f in record_files(records_dir)} == before  # nothing recomputed
    old = [s["instruction_importance"] for s in interp["samples"]["interp_instruct_mc"]]
    assert [s["instruction_importance"] for s in again["samples"]["interp_instruct_mc"]] == old


def test_use_cache_cannot_silently_drop_the_interpretation(tiny_llama_dir, tmp_path):
    from lm_interp_plugin.harness.model import CacheNotSupportedError

    with pytest.raises(CacheNotSupportedError, match="--use_cache"):
        evaluate(
            "interp-hf",
            f"pretrained={tiny_llama_dir},records_dir={tmp_path}",
            tasks=["interp_instruct_mc"],
            use_cache=str(tmp_path / "cache"),
        )


def test_bad_setting_gets_a_did_you_mean(tiny_llama_dir, tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'interp_objective'"):
        evaluate(
            "interp-hf", f"pretrained={tiny_llama_dir},interp_objectiv=prob", tasks=["interp_instruct_mc"]
        )


def test_lm_interp_cli_run_and_ls(tiny_llama_dir, tmp_path):
    proc = run_cli("lm-interp", "ls", "tasks", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "interp_instruct_mc" in proc.stdout and "arc_easy" in proc.stdout
    out = tmp_path / "runs"
    proc = cli_run(
        "lm-interp", f"pretrained={tiny_llama_dir}", "interp_instruct_mc", limit=2, out=out, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_dir = next(p for p in out.iterdir() if p.is_dir())
    assert (model_dir / "interp_records_interp_instruct_mc.jsonl").is_file()  # beside lm-eval's samples
    assert list(model_dir.glob("samples_interp_instruct_mc_*.jsonl"))
    assert "instruction_importance" in proc.stdout


def test_faithfulness_signals_beside_the_paper_score(tiny_llama_dir, tmp_path):
    run = evaluate(
        "interp-hf",
        f"pretrained={tiny_llama_dir},records_dir={tmp_path},interp_ig=true,"
        "interp_ig_steps=8,interp_deletion=true",
        tasks=["interp_instruct_mc"],
    )
    for sample in run["samples"]["interp_instruct_mc"]:
        assert "instruction_importance" in sample  # the paper's score stays
        for key in (
            "ablation_drop_removed",
            "ablation_drop_replaced",
            "ig_instruction_importance",
            "ig_completeness_error",
            "deletion_area_gxi",
            "deletion_area_ig",
            "deletion_gain_ig",
        ):
            assert key in sample, key
    record = load_records(tmp_path / "interp_records_interp_instruct_mc.jsonl")[0]
    assert len(record.extras["ig"]["raw"]) == len(record.prompt_tokens)
    assert record.extras["ablation"]["drop_removed"] == pytest.approx(record.metrics["ablation_drop_removed"])


def test_bf16_run_checks_a_sample_against_float32_and_resumes_under_new_memory_settings(
    tiny_llama_dir, tmp_path
):
    """dtype=bfloat16: every 2nd request carries a float32 check; a rerun with another memory budget and
    checkpointing (how, not what, is computed) resumes from the records instead of recomputing."""
    args = (
        f"pretrained={tiny_llama_dir},records_dir={tmp_path},dtype=bfloat16,interp_fp32_check=2,"
        "interp_ffn=false"
    )
    evaluate("interp-hf", args, tasks=["interp_instruct_mc"])
    path = tmp_path / "interp_records_interp_instruct_mc.jsonl"
    records = load_records(path)
    assert all(r.fingerprint["dtype"] == "bfloat16" for r in records)
    checked = [r for r in records if "fp32_check" in r.extras]
    assert len(checked) == (len(records) + 1) // 2  # the 1st, 3rd, ... request of the run
    for record in checked:
        assert 0 < record.extras["fp32_check"]["rel_error"] < 0.2
    lines = path.read_text().count("\n")
    evaluate(
        "interp-hf",
        args + ",interp_memory_budget=64MB,interp_checkpoint=true,interp_chunk_size=1",
        tasks=["interp_instruct_mc"],
    )
    assert path.read_text().count("\n") == lines  # nothing recomputed


def _samples_by_doc(out: Path, task: str) -> dict[int, dict]:
    (path,) = out.rglob(f"samples_{task}_*.jsonl")
    return {s["doc_id"]: s for s in map(json.loads, path.read_text().splitlines())}


def test_data_parallel_on_two_cpu_processes_matches_one_process(tiny_llama_dir, tmp_path):
    """`torchrun --nproc_per_node 2 -m lm_interp_plugin run ...` with ACCELERATE_USE_CPU=1: the documents are
    split across the ranks, each rank writes its own records file, lm-eval gathers the samples, and every
    per-sample value equals the single-process run's."""
    task = "interp_instruct_mc"
    single, multi = tmp_path / "single", tmp_path / "multi"

    def run(out: Path, **kwargs):
        return cli_run(
            "lm-interp",
            f"pretrained={tiny_llama_dir},records_dir={out / 'records'}",
            task,
            limit=6,
            out=out,
            extra=["--device", "cpu"],
            cwd=tmp_path,
            **kwargs,
        )

    proc = run(single)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(
        multi,
        launcher=["torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"],
        env={"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_rank = [load_records(multi / "records" / f"interp_records_{task}_rank{r}.jsonl") for r in (0, 1)]
    assert all(per_rank), "each rank interprets its own share"
    assert {r.doc_id for r in per_rank[0]}.isdisjoint({r.doc_id for r in per_rank[1]})
    one, two = _samples_by_doc(single, task), _samples_by_doc(multi, task)
    assert sorted(one) == sorted(two) == list(range(6))
    for doc_id, sample in one.items():
        for key in (
            "acc",
            "acc_norm",
            "instruction_importance",
            "instruction_attention",
            "ablation_drop_removed",
        ):
            assert two[doc_id][key] == pytest.approx(sample[key], rel=1e-5, abs=1e-7), (doc_id, key)


def test_python_api_and_interp_hf_give_the_same_matrix(runs, tiny_llama_dir):
    """`attribute()` on a request's (context, continuation) reproduces interp-hf's record for it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_interp_plugin import attribute

    from tolerances import assert_matrix_close

    _, interp, records_dir = runs
    task = "interp_instruct_mc"
    record = load_records(records_dir / f"interp_records_{task}.jsonl", strict=True)[0]
    sample = next(s for s in interp["samples"][task] if s["doc_hash"] == record.doc_hash)
    context, continuation = sample["arguments"][record.request_index][:2]  # in memory: (ctx, cont) tuples
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    result = attribute(model, tokenizer, context, continuation, attention=False, ffn=False, ablation=False)
    assert result.prompt_tokens == record.prompt_tokens and result.target_tokens == record.target_tokens
    assert_matrix_close(result.raw, record.raw)
