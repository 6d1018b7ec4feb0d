"""The shipped interp_ variants: discoverable by name and wildcard, stock metrics plus interpretation
metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from lm_interp_plugin.harness.variants import variant_config, write_variant

REPO = Path(__file__).resolve().parents[2]
VARIANTS = REPO / "tasks" / "variants"
FIXTURES = REPO / "tests" / "fixtures"
EXPECTED = {
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "gsm8k",
    "ifeval",
    "truthfulqa_mc2",
    "winogrande",
    "boolq",
    "piqa",
}


def test_every_listed_benchmark_has_a_variant_without_a_copied_config():
    from lm_eval.tasks._yaml_loader import load_yaml

    names = {p.stem.removeprefix("interp_") for p in VARIANTS.glob("interp_*.yaml")}
    assert EXPECTED <= names and sum(n.startswith("mmlu_") for n in names) == 57
    group = load_yaml(VARIANTS / "lm_interp_mmlu.yaml", resolve_func=False)
    assert not group["group"].startswith("interp_") and len(group["task"]) == 57
    for name in EXPECTED:
        cfg = load_yaml(VARIANTS / f"interp_{name}.yaml", resolve_func=False)
        assert set(cfg) == {"task", "class", "metadata"}  # only a reference to the stock task
    merged = variant_config(load_yaml(VARIANTS / "interp_arc_challenge.yaml", resolve_func=False))
    assert merged["task"] == "interp_arc_challenge" and merged["dataset_name"] == "ARC-Challenge"
    assert merged["doc_to_text"] == "Question: {{question}}\nAnswer:" and merged["metadata"]["interp"]["auto"]


@pytest.mark.slow  # the unknown-name check builds the whole stock task index
def test_write_variant_for_any_task(tmp_path):
    from lm_eval.tasks._yaml_loader import load_yaml

    path = write_variant("piqa", tmp_path, parts={"goal": "instruction"})
    assert path.name == "interp_piqa.yaml" and (tmp_path / "interp_task.py").is_file()
    cfg = variant_config(load_yaml(path, resolve_func=True) | {})
    assert cfg["task"] == "interp_piqa" and cfg["metadata"]["interp"]["parts"] == {"goal": "instruction"}
    with pytest.raises(ValueError, match="no installed lm-eval task"):
        write_variant("no_such_task_xyz", tmp_path)


@pytest.mark.slow
def test_variants_report_stock_and_interpretation_metrics(tiny_llama_dir, tmp_path):
    from lm_eval.tasks._yaml_loader import load_yaml

    from lm_interp_plugin.harness.tasks import InterpTask

    from lmeval_run import run_lmeval

    tasks = []
    for name, fixture in (("arc_easy", "arc"), ("winogrande", "winogrande"), ("hellaswag", "hellaswag")):
        cfg = variant_config(load_yaml(VARIANTS / f"interp_{name}.yaml", resolve_func=False))
        splits = {cfg[k] for k in ("training_split", "validation_split", "test_split") if cfg.get(k)}
        cfg["metadata"]["interp"]["data_files"] = {s: str(FIXTURES / f"{fixture}.jsonl") for s in splits}
        tasks.append(InterpTask(config=cfg))
    out = run_lmeval(f"pretrained={tiny_llama_dir},records_dir={tmp_path}", tasks, limit=2)
    for name in ("interp_arc_easy", "interp_winogrande", "interp_hellaswag"):
        table = out["results"][name]
        assert "acc,none" in table
        assert any(k.startswith("attribution_share_content") for k in table), table
        for sample in out["samples"][name]:
            assert "acc" in sample and sample["instruction_found"] in (0.0, 1.0)
    # issue 13: ARC's "Question:" is a field label, not an instruction: no instruction, no number
    assert out["results"]["interp_arc_easy"]["instruction_found,none"] == 0.0
    assert "instruction_importance,none" not in out["results"]["interp_arc_easy"]


def test_shipped_shims_are_the_one_shim_text():
    """Every task folder's `!function` shim is the text `write_shim` writes (one source, not copies)."""
    from lm_interp_plugin.harness.tasks import tasks_dir
    from lm_interp_plugin.harness.variants import SHIM, SHIM_TEXT

    for folder in (tasks_dir(), tasks_dir() / "variants"):
        assert (folder / SHIM).read_text(encoding="utf-8") == SHIM_TEXT
