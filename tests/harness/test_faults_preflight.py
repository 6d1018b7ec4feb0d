"""Reliability rows of issue 24 checked once before lm-eval's long passes (`harness.model_checks`): an
unwritable records_dir, non-finite weights or outputs, and a model that is not a causal decoder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return tiny_model("llama", seed=0)


def test_an_unwritable_records_dir_is_named(tmp_path):
    from lm_interp_plugin.harness.model_checks import PreflightError, check_records_dir

    with pytest.raises(PreflightError, match=r"^records_dir=/proc/x cannot be written .*records_dir=DIR"):
        check_records_dir(Path("/proc/x"))
    check_records_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())


def test_a_finite_causal_model_passes(tiny, lm_tokenizer):
    from lm_interp_plugin.harness.model_checks import check_model

    check_model(tiny, lm_tokenizer, "tiny")


def test_nan_weights_are_named_once_before_any_pass(tiny, lm_tokenizer):
    import copy

    import torch

    from lm_interp_plugin.harness.model_checks import PreflightError, check_model

    broken = copy.deepcopy(tiny)
    params = dict(broken.named_parameters())
    name = next(n for n in params if "layers.1." in n and n.endswith("weight"))
    with torch.no_grad():
        params[name].view(-1)[:3] = math.nan
        params[name].view(-1)[3] = math.inf
    with pytest.raises(
        PreflightError, match=rf"tiny: 1 weight tensor\(s\) hold NaN or inf: {name} \(4 values\)"
    ):
        check_model(broken, lm_tokenizer, "tiny")


def test_non_finite_outputs_are_named(tiny, lm_tokenizer):
    """Finite weights, overflowing activations (what float16 does to some checkpoints)."""
    import copy

    import torch

    from lm_interp_plugin.harness.model_checks import PreflightError, check_model

    broken = copy.deepcopy(tiny)
    with torch.no_grad():
        for p in broken.parameters():
            p.mul_(3e12)  # finite weights whose products overflow float32
    with pytest.raises(PreflightError, match="outputs are NaN or inf on a short probe sentence"):
        check_model(broken, lm_tokenizer, "tiny")


def test_an_encoder_is_refused(lm_tokenizer):
    """A BERT folder ran under interp-hf to exit 0; now it is refused as not causal."""
    from transformers import BertConfig, BertLMHeadModel

    from lm_interp_plugin.harness.model_checks import PreflightError, check_model

    config = BertConfig(
        vocab_size=len(lm_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    import torch

    torch.manual_seed(0)
    bert = BertLMHeadModel(config).eval()
    with pytest.raises(PreflightError, match=r"bert \(BertLMHeadModel\) is not a causal decoder"):
        check_model(bert, lm_tokenizer, "bert")


def _consistent_record(seed: int = 0):
    import numpy as np

    from lm_interp_plugin.interpret.passes import attribution_metrics
    from lm_interp_plugin.methods.importance import ImportanceParams, quantise
    from lm_interp_plugin.records import InterpRecord

    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(6, 4))
    params = ImportanceParams()
    S = quantise(raw, L=params.L, eps=params.eps)
    parts = ["special", "instruction", "instruction", "template", "content", "cue"]
    return InterpRecord(
        task="t",
        doc_id=0,
        doc_hash="h",
        request_index=0,
        request_type="loglikelihood",
        role="gold",
        prompt_tokens=list("abcdef"),
        target_tokens=list("wxyz"),
        token_parts=parts,
        raw=raw.tolist(),
        quantised=S.tolist(),
        params={**params.to_dict(), "objective": "prob"},
        metrics={**attribution_metrics(S, parts, params), "instruction_attention": 0.3},
    )


def test_metrics_are_checked_against_the_stored_matrix():
    """An edited metric (with a valid checksum: the writer's own) no longer passes for the record's own."""
    import dataclasses

    from lm_interp_plugin.harness.verify import metrics_mismatch

    rec = _consistent_record()
    assert metrics_mismatch(rec) is None
    edited = dataclasses.replace(rec, metrics={**rec.metrics, "instruction_importance": 9.5})
    assert "its instruction_importance (9.5) is not what its own stored matrix gives" in metrics_mismatch(
        edited
    )
    share = {**rec.metrics, "attribution_share_content": rec.metrics["attribution_share_content"] + 0.01}
    assert "attribution_share_content" in metrics_mismatch(dataclasses.replace(rec, metrics=share))
    quantised = [row[:] for row in rec.quantised]
    quantised[0][0] = 10 - quantised[0][0]
    assert "not the quantisation of its raw matrix" in metrics_mismatch(
        dataclasses.replace(rec, quantised=quantised)
    )
    assert metrics_mismatch(dataclasses.replace(rec, raw=[], quantised=[])) is None  # nothing stored


def test_stored_log_probabilities_must_match_the_answer():
    import dataclasses

    from lm_interp_plugin.harness.verify import logprob_mismatch

    rec = dataclasses.replace(_consistent_record(), extras={"target_logprobs": [-1.25, -0.5]})
    assert logprob_mismatch(rec, -1.75 + 1e-6, half_precision=False) is None  # another forward's rounding
    assert "sum to -1.75, this model answers -2.5" in logprob_mismatch(rec, -2.5, half_precision=False)
    assert logprob_mismatch(rec, -1.9, half_precision=True) is None  # bf16's log-softmax
    assert logprob_mismatch(dataclasses.replace(rec, extras={}), -9.0, half_precision=False) is None


def test_a_non_finite_metric_is_left_out_of_the_record_not_a_json_crash():
    """Before: "Out of range float values are not JSON compliant" while writing the record."""
    from types import SimpleNamespace

    import numpy as np

    from lm_interp_plugin.records import InterpRecord, parse_record_line, record_line

    result = SimpleNamespace(
        raw=np.zeros((2, 1)),
        quantised=np.zeros((2, 1), dtype=np.int64),
        mode="reverse",
        method="gradient_x_input",
        metrics={"instruction_attention": 0.25, "ablation_drop_removed": float("nan")},
        attention={},
        ffn={},
        target_logprobs=np.array([-1.0]),
        extras={},
        notes=[],
    )
    request = {"task": "t", "doc_id": 0, "doc_hash": "h", "request_index": 0}
    record = InterpRecord.from_pass(
        result,
        request={**request, "request_type": "loglikelihood", "role": "gold"},
        prompt_tokens=["a", "b"],
        target_tokens=["c"],
        token_parts=["instruction", "content"],
        params={"L": 10},
        fingerprint={},
        notes=[],
    )
    assert record.metrics == {"instruction_attention": 0.25}
    assert "not finite (NaN/inf), left out: ablation_drop_removed" in record.notes
    assert parse_record_line(record_line(record)).metrics == record.metrics


def test_a_family_that_cannot_be_attributed_is_refused_before_any_forward(lm_tokenizer):
    """A Gemma 4 draft model (its forward needs the target model's shared key/value states) is refused by name
    before the probe forward, which it could not run, and before lm-eval's passes."""
    from lm_interp_plugin.harness.model_checks import PreflightError, check_model
    from lm_interp_plugin.testing.families import build_family_model

    draft = build_family_model("gemma4_assistant", vocab_size=len(lm_tokenizer))
    refused = r"^draft: .*'gemma4_assistant'.* cannot be attributed: .*draft model"
    with pytest.raises(PreflightError, match=refused):
        check_model(draft, lm_tokenizer, "draft")
