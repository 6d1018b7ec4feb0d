"""Issue 23 end to end through lm-eval: interp-hf with a reference model and the three new signals; the
per-sample output carries them next to accuracy, and the records carry their detail."""

from __future__ import annotations

import pytest

from lm_interp_plugin.records import load_records, record_files

from lmeval_run import run_lmeval

pytestmark = pytest.mark.slow

SIGNALS = "reference_shift+logit_lens+contrastive"


@pytest.fixture(scope="module")
def run(tiny_llama_dir, lm_tokenizer, tmp_path_factory, tiny_model):
    from lm_interp_plugin.testing.tiny import save_tiny

    root = tmp_path_factory.mktemp("shift_e2e")
    reference = save_tiny(tiny_model("llama", seed=9), lm_tokenizer, root / "reference")
    records = root / "records"
    args = (
        f"pretrained={tiny_llama_dir},records_dir={records},interp_reference={reference},"
        f"interp_signals={SIGNALS},interp_ffn=false"
    )
    return run_lmeval(args, ["interp_instruct", "interp_instruct_mc"], limit=3), records


def test_samples_carry_the_new_metrics_next_to_accuracy(run):
    result, _ = run
    for sample in result["samples"]["interp_instruct_mc"]:
        assert "acc" in sample
        assert sample["reference_kl"] > 0 and 0 <= sample["token_shift_shifted"] <= 1
        assert "contrastive_margin" in sample and "contrastive_share_instruction" in sample
    for sample in result["samples"]["interp_instruct"]:
        assert "exact_match" in sample and sample["reference_kl"] > 0
        assert "contrastive_margin" not in sample  # generation: no other choice, left out (not 0)
    assert "reference_kl,none" in result["results"]["interp_instruct_mc"]


def test_records_carry_each_signals_detail(run):
    _, records = run
    recs = [r for path in record_files(records) for r in load_records(path) if r.task == "interp_instruct_mc"]
    assert recs
    for rec in recs:
        shift = rec.extras["reference_shift"]
        assert len(shift["kl"]) == len(rec.target_tokens) and len(shift["ranks"]) == len(rec.target_tokens)
        lens = rec.extras["logit_lens"]
        assert len(lens["ranks"]) == lens["num_layers"] and len(lens["ranks"][0]) == len(rec.target_tokens)
        contrast = rec.extras["contrastive"]
        assert len(contrast["raw"]) == len(rec.prompt_tokens)
        assert contrast["margin"] == pytest.approx(rec.metrics["contrastive_margin"])
